// `Synced` on a union.
use diesel_sync::Synced;

#[derive(Synced)]
pub union Product {
    id: i64,
    code: u64,
}

fn main() {}
