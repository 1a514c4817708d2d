//! Helpers for error messages: "did you mean …?" and readable lists.

/// The candidate closest to `name`, if it is a likely typo of it.
pub(crate) fn closest<'a, S: AsRef<str> + ?Sized + 'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a S>,
) -> Option<&'a str> {
    let name = name.to_lowercase();
    candidates
        .into_iter()
        .map(AsRef::as_ref)
        .map(|candidate| (distance(&name, &candidate.to_lowercase()), candidate))
        .filter(|&(distance, candidate)| {
            distance > 0
                && distance <= (name.chars().count().max(candidate.chars().count()) / 3).max(1)
        })
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

/// `a`, `a and b`, `a, b and c`.
pub(crate) fn list(items: impl IntoIterator<Item = String>) -> String {
    let items: Vec<String> = items.into_iter().collect();
    match items.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// Appends formatted text to a message.
pub(crate) fn push(message: &mut String, text: std::fmt::Arguments<'_>) {
    std::fmt::Write::write_fmt(message, text).expect("writing to a String cannot fail");
}

/// Levenshtein distance between two short strings.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::{closest, list};

    #[test]
    fn suggests_a_close_name_only() {
        assert_eq!(closest("stor", ["store", "target", "key"]), Some("store"));
        assert_eq!(closest("shop_id", ["id", "store_id", "name"]), None);
        assert_eq!(
            closest("product_idd", ["id", "product_id"]),
            Some("product_id")
        );
        assert_eq!(closest("store", ["store"]), None);
    }

    #[test]
    fn lists_read_as_prose() {
        let items = |n: usize| ["`a`", "`b`", "`c`"][..n].iter().map(ToString::to_string);
        assert_eq!(list(items(1)), "`a`");
        assert_eq!(list(items(2)), "`a` and `b`");
        assert_eq!(list(items(3)), "`a`, `b` and `c`");
    }
}
