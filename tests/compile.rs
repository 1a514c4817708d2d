//! What `#[derive(Synced)]` accepts and how it reports what it does not: every file in
//! `tests/ui/pass` compiles (and runs), every file in `tests/ui/fail` fails with the error
//! beside it in a `.stderr` file. Regenerate those with `TRYBUILD=overwrite cargo test --test
//! compile`, then read each one.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
