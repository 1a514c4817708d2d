//! The behaviour suite: every semantic of the library, written once against [`Kind`] and run
//! for both connection kinds on every backend (`behaviour.rs` for diesel-async, `blocking.rs`
//! for synchronous Diesel).
//!
//! What must be delivered comes from the database: audit triggers record the target id of
//! every change, and a rolled-back change takes its record with it. Each test also names the
//! ids it expects, so a test whose writes silently did nothing fails.

use std::collections::BTreeSet;

use diesel::result::Error;
use diesel_sync::CaptureRefused;

use super::kind::{Failure, Insert, Kind, Scope, Setup, Step, Trace, Write};
use super::{NewListing, PriceRecord, Product};

fn new_product(id: i64, store_id: i64) -> Product {
    Product {
        id,
        store_id,
        name: format!("new-{id}"),
        price_cents: 500,
    }
}

/// What must have been delivered, by the database's own record: the target ids the audit
/// recorded, less those whose product is gone (a stale id is skipped, not delivered).
pub async fn committed_targets<K: Kind>(f: &mut K) -> Vec<i64> {
    let live: BTreeSet<i64> = f.product_ids().await.into_iter().collect();
    let mut targets = f.audited().await;
    targets.retain(|id| live.contains(id));
    targets
}

/// What must have been delivered as removals, by the database's own record: the products the
/// audit recorded as deleted that are gone now (one deleted and written again is a change).
pub async fn committed_removals<K: Kind>(f: &mut K) -> Vec<i64> {
    let live: BTreeSet<i64> = f.product_ids().await.into_iter().collect();
    let mut removed = f.audited_deletions().await;
    removed.retain(|id| !live.contains(id));
    removed
}

/// Checks that the database committed changes to exactly `expected`, and that the handlers
/// received each of those ids once, and each product it deleted as a removal, once.
pub async fn assert_delivered<K: Kind>(f: &mut K, expected: &[i64]) {
    let committed = committed_targets(f).await;
    assert_eq!(committed, expected, "the targets the database changed");
    assert_eq!(
        f.capture().ids(),
        committed,
        "the ids the handlers received"
    );
    assert_eq!(
        f.capture().removed(),
        committed_removals(f).await,
        "the ids the handlers received as removals"
    );
}

/// Checks that no step failed and every transaction committed.
fn assert_committed(trace: &Trace) {
    assert!(trace.result.is_ok(), "{trace:?}");
    assert!(!trace.transactions.is_empty(), "{trace:?}");
    assert!(trace.transactions.iter().all(Result::is_ok), "{trace:?}");
}

fn is_requested_rollback(result: &Result<(), Failure>) -> bool {
    matches!(result, Err(Failure::Database(Error::RollbackTransaction)))
}

pub async fn ids_are_deduplicated_within_a_transaction<K: Kind>() {
    let mut f = K::open("dedup", Setup::default()).await;
    let trace = f
        .run(&[Step::transaction(vec![
            Step::set_price(1, 101),
            Step::set_price(1, 102),
            Step::set_price(1, 103),
            Step::set_price(2, 200),
            Step::Checkpoint,
        ])])
        .await;
    assert_committed(&trace);
    assert_eq!(trace.checkpoints[0].pending_ids, 2);
    f.settle().await;
    assert_delivered(&mut f, &[1, 2]).await;
    let calls = f.capture().calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let latest = calls[0].rows.iter().find(|p| p.id == 1).unwrap();
    assert_eq!(latest.price_cents, 103, "the committed row is sent");
}

pub async fn rollback_drops_every_id<K: Kind>() {
    let mut f = K::open("rollback", Setup::default()).await;
    let trace = f
        .run(&[Step::rolled_back(vec![
            Step::set_price(1, 1),
            Step::InsertProducts {
                rows: vec![new_product(1001, 1)],
                write: Insert::Typed,
            },
        ])])
        .await;
    assert!(is_requested_rollback(&trace.transactions[0]), "{trace:?}");
    assert_eq!(f.pending_ids(), 0);
    // The next commit must not carry the rolled-back ids along.
    let trace = f
        .run(&[Step::transaction(vec![Step::set_price(5, 5)])])
        .await;
    assert_committed(&trace);
    f.settle().await;
    assert_delivered(&mut f, &[5]).await;
}

pub async fn user_error_rolls_back_and_drops_ids<K: Kind>() {
    let mut f = K::open("user_error", Setup::default()).await;
    let trace = f
        .run(&[Step::transaction(vec![Step::set_price(3, 3), Step::Fail])])
        .await;
    assert!(
        matches!(trace.transactions[..], [Err(Failure::Rejected)]),
        "{trace:?}"
    );
    f.settle().await;
    assert!(f.capture().calls().is_empty());
    assert_eq!(f.metrics().ids_committed, 0);
    assert_delivered(&mut f, &[]).await;
    assert_eq!(
        f.product(3).await.price_cents,
        super::products(3, 100)[2].price_cents
    );
}

pub async fn rolled_back_savepoint_drops_only_its_ids<K: Kind>() {
    let mut f = K::open("savepoint_rollback", Setup::default()).await;
    let trace = f
        .run(&[Step::transaction(vec![
            Step::set_price(1, 11),
            Step::rolled_back(vec![Step::set_price(2, 22), Step::set_price(1, 99)]),
            Step::set_price(3, 33),
        ])])
        .await;
    assert!(is_requested_rollback(&trace.transactions[0]), "{trace:?}");
    assert!(trace.transactions[1].is_ok(), "{trace:?}");
    f.settle().await;
    assert_delivered(&mut f, &[1, 3]).await;
    let one = f.capture().calls()[0]
        .rows
        .iter()
        .find(|p| p.id == 1)
        .cloned()
        .unwrap();
    assert_eq!(
        one.price_cents, 11,
        "the savepoint's write to 1 was rolled back"
    );
}

pub async fn released_savepoint_merges_into_its_parent<K: Kind>() {
    let mut f = K::open("savepoint_release", Setup::default()).await;
    let trace = f
        .run(&[Step::transaction(vec![
            Step::set_price(1, 11),
            Step::transaction(vec![
                Step::set_price(2, 22),
                Step::transaction(vec![Step::set_price(1, 12)]),
            ]),
            Step::Checkpoint,
        ])])
        .await;
    assert_committed(&trace);
    assert_eq!(trace.transactions.len(), 3);
    assert_eq!(trace.checkpoints[0].pending_ids, 2);
    f.settle().await;
    assert_delivered(&mut f, &[1, 2]).await;
    assert_eq!(
        f.capture().calls().len(),
        1,
        "one call for the store, after the outer commit"
    );
}

pub async fn nothing_is_handed_on_before_the_outermost_commit<K: Kind>() {
    let mut f = K::open("before_commit", Setup::default()).await;
    let trace = f
        .run(&[Step::transaction(vec![
            Step::transaction(vec![Step::set_price(1, 1)]),
            Step::Checkpoint,
        ])])
        .await;
    assert_committed(&trace);
    assert!(
        trace.checkpoints[0].delivered.is_empty(),
        "a released savepoint is not a commit"
    );
    assert_eq!(trace.checkpoints[0].pending_ids, 1);
    f.settle().await;
    assert_delivered(&mut f, &[1]).await;
}

pub async fn write_outside_a_transaction_is_handed_on_at_once<K: Kind>() {
    let mut f = K::open("autocommit", Setup::default()).await;
    let trace = f.run(&[Step::set_price(7, 70), Step::Checkpoint]).await;
    assert!(trace.result.is_ok(), "{trace:?}");
    assert_eq!(
        trace.checkpoints[0].delivered,
        [7],
        "with no COMMIT to wait for"
    );
    assert_delivered(&mut f, &[7]).await;
    assert_eq!(f.capture().calls()[0].rows[0].price_cents, 70);
}

pub async fn insert_one_registers_its_id<K: Kind>() {
    let mut f = K::open("insert_one", Setup::default()).await;
    let trace = f
        .run(&[Step::transaction(vec![Step::InsertProducts {
            rows: vec![new_product(1001, 2)],
            write: Insert::Typed,
        }])])
        .await;
    assert_committed(&trace);
    f.settle().await;
    assert_delivered(&mut f, &[1001]).await;
    let calls = f.capture().calls();
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0].store, calls[0].ids()), (2, vec![1001]));
}

pub async fn insert_many_registers_every_id<K: Kind>() {
    let mut f = K::open("insert_many", Setup::default()).await;
    let rows = vec![
        new_product(1001, 1),
        new_product(1002, 1),
        new_product(1003, 3),
    ];
    let trace = f
        .run(&[Step::transaction(vec![Step::InsertProducts {
            rows,
            write: Insert::Typed,
        }])])
        .await;
    assert_committed(&trace);
    assert_eq!(trace.affected, [3]);
    f.settle().await;
    assert_delivered(&mut f, &[1001, 1002, 1003]).await;
    assert_eq!(f.capture().calls().len(), 2, "stores 1 and 3");
}

pub async fn keys_from_rows_insert_registers_the_keys_its_rows_carry<K: Kind>() {
    let mut f = K::open("keys_from_rows", Setup::default()).await;
    let records = vec![
        PriceRecord {
            object_id: 142,
            amount_cents: 999,
        },
        PriceRecord {
            object_id: 1001,
            amount_cents: 5,
        },
    ];
    let trace = f
        .run(&[Step::transaction(vec![
            Step::InsertProducts {
                rows: vec![new_product(1001, 1), new_product(1002, 3)],
                write: Insert::KeysFromRows,
            },
            Step::InsertPriceRecords {
                rows: records,
                write: Insert::KeysFromRows,
            },
        ])])
        .await;
    assert_committed(&trace);
    assert_eq!(trace.affected, [2, 2]);
    assert_eq!(f.pending_ids(), 0);
    f.settle().await;
    assert_delivered(&mut f, &[142, 1001, 1002]).await;
    assert_eq!(f.capture().calls().len(), 3, "stores 1, 2 and 3");
}

pub async fn save_changes_registers_the_saved_row<K: Kind>() {
    let mut f = K::open("save_changes", Setup::default()).await;
    let trace = f
        .run(&[Step::transaction(vec![Step::SavePrice {
            id: 12,
            cents: 1_212,
        }])])
        .await;
    assert_committed(&trace);
    f.settle().await;
    assert_delivered(&mut f, &[12]).await;
    assert_eq!(f.capture().calls()[0].rows[0].price_cents, 1_212);
}

pub async fn changeset_update_registers_the_row<K: Kind>() {
    let mut f = K::open("changeset", Setup::default()).await;
    let trace = f
        .run(&[Step::SetPriceFromForm {
            id: 6,
            cents: 66,
            write: Write::Typed,
        }])
        .await;
    assert!(trace.result.is_ok(), "{trace:?}");
    f.settle().await;
    assert_delivered(&mut f, &[6]).await;
    assert_eq!(f.capture().calls()[0].rows[0].price_cents, 66);
}

pub async fn bulk_update_by_filter_registers_every_affected_id<K: Kind>() {
    let mut f = K::open("bulk_update", Setup::default()).await;
    let trace = f
        .run(&[Step::transaction(vec![Step::RaisePrices {
            scope: Scope::Store(2),
            cents: 10,
            write: Write::Typed,
        }])])
        .await;
    assert_committed(&trace);
    assert_eq!(trace.affected, [100]);
    f.settle().await;
    assert_delivered(&mut f, &(101..=200).collect::<Vec<_>>()).await;
    assert_eq!(f.capture().calls().len(), 1);
}

pub async fn bulk_delete_by_filter_registers_every_affected_target<K: Kind>() {
    let setup = Setup {
        price_records: (1..=10)
            .map(|id| PriceRecord {
                object_id: id,
                amount_cents: id * 10,
            })
            .collect(),
        ..Setup::default()
    };
    let mut f = K::open("bulk_delete", setup).await;
    let trace = f
        .run(&[Step::transaction(vec![Step::DeletePriceRecords {
            up_to: 4,
            write: Write::Typed,
        }])])
        .await;
    assert_committed(&trace);
    assert_eq!(trace.affected, [4]);
    f.settle().await;
    assert_delivered(&mut f, &[1, 2, 3, 4]).await;
}

pub async fn upsert_registers_inserted_and_updated_ids<K: Kind>() {
    let mut f = K::open("upsert", Setup::default()).await;
    // Product 3 exists: updated. Product 1001 does not: inserted.
    let trace = f
        .run(&[Step::transaction(vec![Step::UpsertProducts {
            rows: vec![new_product(3, 1), new_product(1001, 1)],
            cents: 777,
            write: Write::Typed,
        }])])
        .await;
    assert_committed(&trace);
    f.settle().await;
    assert_delivered(&mut f, &[3, 1001]).await;
    let three = f.capture().calls()[0]
        .rows
        .iter()
        .find(|p| p.id == 3)
        .cloned()
        .unwrap();
    assert_eq!(three.price_cents, 777);
}

pub async fn a_typed_delete_of_a_product_is_delivered_as_a_removal<K: Kind>() {
    let mut f = K::open("delete_one", Setup::default()).await;
    let trace = f
        .run(&[Step::transaction(vec![
            Step::DeleteProduct {
                id: 9,
                write: Write::Typed,
            },
            Step::Checkpoint,
        ])])
        .await;
    assert_committed(&trace);
    assert_eq!(
        (trace.affected[0], trace.checkpoints[0].pending_ids),
        (1, 1)
    );
    f.settle().await;
    let metrics = f.metrics();
    assert_eq!(
        (
            metrics.ids_committed,
            metrics.ids_removed,
            metrics.ids_stale
        ),
        (1, 1, 0)
    );
    assert_eq!(
        f.audited_deletions().await,
        [9],
        "the database saw the delete"
    );
    assert_delivered(&mut f, &[]).await;
    let calls = f.capture().calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!((calls[0].store, calls[0].removed.clone()), (1, vec![9]));
}

pub async fn mark_changed_registers_writes_run_on_the_inner_connection<K: Kind>() {
    let mut f = K::open("mark_changed", Setup::default()).await;
    let mut marked = vec![4, 5, 6, 7, 1001, 1002];
    marked.extend(201..=300);
    let trace = f
        .run(&[Step::transaction(vec![
            // The inner connection is neither captured nor refused: the caller registers what
            // it changed.
            Step::SetPrice {
                id: 4,
                cents: 4444,
                write: Write::Unsynced,
            },
            Step::RaisePrices {
                scope: Scope::Store(3),
                cents: 1,
                write: Write::Unsynced,
            },
            Step::InsertProducts {
                rows: vec![new_product(1001, 1)],
                write: Insert::Unsynced,
            },
            Step::UpsertProducts {
                rows: vec![new_product(5, 1), new_product(1002, 1)],
                cents: 777,
                write: Write::Unsynced,
            },
            Step::DeleteProduct {
                id: 6,
                write: Write::Unsynced,
            },
            Step::InsertPriceRecords {
                rows: vec![PriceRecord {
                    object_id: 7,
                    amount_cents: 1,
                }],
                write: Insert::Unsynced,
            },
            Step::SetAmount {
                object_id: 7,
                cents: 2,
                write: Write::Unsynced,
            },
            Step::DeletePriceRecords {
                up_to: 7,
                write: Write::Unsynced,
            },
            Step::Checkpoint,
            Step::MarkChanged { ids: marked },
            Step::MarkRemoved {
                removed: vec![(6, 1)],
            },
            Step::Checkpoint,
        ])])
        .await;
    assert_committed(&trace);
    let pending: Vec<usize> = trace.checkpoints.iter().map(|c| c.pending_ids).collect();
    assert_eq!(
        pending,
        [0, 106],
        "only mark_changed and mark_removed register the inner writes"
    );
    f.settle().await;
    let mut expected = vec![4, 5, 7, 1001, 1002];
    expected.extend(201..=300);
    expected.sort_unstable();
    assert_delivered(&mut f, &expected).await;
    let four = f
        .capture()
        .calls()
        .iter()
        .flat_map(|call| call.rows.clone())
        .find(|p| p.id == 4)
        .unwrap();
    assert_eq!(four.price_cents, 4444);
}

pub async fn reference_model_registers_its_targets_id<K: Kind>() {
    let mut f = K::open("reference", Setup::default()).await;
    let trace = f
        .run(&[Step::transaction(vec![
            Step::InsertPriceRecords {
                rows: vec![PriceRecord {
                    object_id: 142,
                    amount_cents: 999,
                }],
                write: Insert::Typed,
            },
            Step::SetAmount {
                object_id: 142,
                cents: 1_000,
                write: Write::Typed,
            },
        ])])
        .await;
    assert_committed(&trace);
    f.settle().await;
    assert_delivered(&mut f, &[142]).await;
    let calls = f.capture().calls();
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0].store, calls[0].ids()), (2, vec![142]));
}

pub async fn stale_ids_are_skipped<K: Kind>() {
    let mut f = K::open("stale", Setup::default()).await;
    let trace = f
        .run(&[Step::transaction(vec![
            Step::set_price(8, 80),
            Step::set_price(10, 100),
            // Gone by resolve time, as if another process deleted it.
            Step::DeleteProduct {
                id: 8,
                write: Write::Unsynced,
            },
        ])])
        .await;
    assert_committed(&trace);
    f.settle().await;
    assert_eq!(f.audited().await, [8, 10]);
    assert_eq!(committed_targets(&mut f).await, [10]);
    assert_eq!(f.capture().ids(), [10]);
    assert!(
        f.capture().removed().is_empty(),
        "the delete ran unseen: only the price change of 8 was registered"
    );
    assert_eq!(f.metrics().ids_stale, 1);
    assert_eq!(f.dead_letter_count(), 0, "a stale id is not an error");
}

pub async fn one_handler_call_per_store_holding_the_committed_rows<K: Kind>() {
    let mut f = K::open("per_store", Setup::default()).await;
    let writes = [(1, 1), (2, 2), (3, 3), (150, 150), (250, 250), (251, 251)]
        .into_iter()
        .map(|(id, cents)| Step::set_price(id, cents))
        .collect();
    let trace = f.run(&[Step::transaction(writes)]).await;
    assert_committed(&trace);
    f.settle().await;
    assert_delivered(&mut f, &[1, 2, 3, 150, 250, 251]).await;
    let mut calls = f.capture().calls();
    calls.sort_by_key(|c| c.store);
    let shape: Vec<(i64, Vec<i64>)> = calls.iter().map(|c| (c.store, c.ids())).collect();
    assert_eq!(
        shape,
        vec![(1, vec![1, 2, 3]), (2, vec![150]), (3, vec![250, 251])]
    );
    for call in &calls {
        for row in &call.rows {
            assert_eq!(row.store_id, call.store);
            assert_eq!(row.price_cents, row.id, "committed price of {}", row.id);
        }
    }
    assert_eq!(f.metrics().resolve_queries, 1);
}

pub async fn a_hundred_thousand_ids_in_one_transaction<K: Kind>() {
    let setup = Setup {
        products: 100_000,
        per_store: 1_000,
        ..Setup::default()
    };
    let mut f = K::open("hundred_thousand", setup).await;
    let trace = f
        .run(&[Step::transaction(vec![Step::RaisePrices {
            scope: Scope::All,
            cents: 1,
            write: Write::Typed,
        }])])
        .await;
    assert_committed(&trace);
    assert_eq!(trace.affected, [100_000]);
    f.settle().await;
    assert_delivered(&mut f, &(1..=100_000).collect::<Vec<_>>()).await;
    assert_eq!(f.capture().calls().len(), 100);
    let chunk = K::MAX_IDS_PER_QUERY.min(100_000) as u64;
    assert_eq!(f.metrics().resolve_queries, 100_000_u64.div_ceil(chunk));
}

pub async fn test_transaction_is_treated_as_the_outermost<K: Kind>() {
    let mut f = K::open("test_transaction", Setup::default()).await;
    f.begin_test_transaction().await;
    let trace = f
        .run(&[Step::transaction(vec![Step::set_price(2, 2)])])
        .await;
    assert_committed(&trace);
    f.settle().await;
    assert_delivered(&mut f, &[2]).await;
}

pub async fn plain_diesel_updates_and_deletes_register_every_row_they_change<K: Kind>() {
    let setup = Setup {
        price_records: [7, 8]
            .map(|object_id| PriceRecord {
                object_id,
                amount_cents: 990,
            })
            .to_vec(),
        ..Setup::default()
    };
    let mut f = K::open("plain_update", setup).await;
    let trace = f
        .run(&[Step::transaction(vec![
            Step::SetPrice {
                id: 1,
                cents: 11,
                write: Write::Plain,
            },
            Step::SetPriceFromForm {
                id: 2,
                cents: 22,
                write: Write::Plain,
            },
            Step::RaisePrices {
                scope: Scope::Store(3),
                cents: 1,
                write: Write::Plain,
            },
            Step::DeleteProduct {
                id: 6,
                write: Write::Plain,
            },
            Step::SetAmount {
                object_id: 8,
                cents: 1,
                write: Write::Plain,
            },
            Step::DeletePriceRecords {
                up_to: 7,
                write: Write::Plain,
            },
        ])])
        .await;
    assert_committed(&trace);
    assert_eq!(trace.affected, [1, 1, 100, 1, 1, 1]);
    f.settle().await;
    let mut expected = vec![1, 2, 7, 8];
    expected.extend(201..=300);
    assert_delivered(&mut f, &expected).await;
    assert_eq!(f.capture().removed(), [6], "product 6 was deleted");
    assert_eq!(f.metrics().ids_removed, 1);
    assert_eq!(f.metrics().ids_stale, 0);
}

pub async fn deleted_products_reach_their_stores_handler_as_removals<K: Kind>() {
    let setup = Setup {
        price_records: vec![PriceRecord {
            object_id: 8,
            amount_cents: 990,
        }],
        ..Setup::default()
    };
    let mut f = K::open("removals", setup).await;
    let trace = f
        .run(&[
            Step::transaction(vec![
                // One row, by filter, and in raw SQL.
                Step::DeleteProduct {
                    id: 5,
                    write: Write::Plain,
                },
                Step::DeleteProducts {
                    store: 2,
                    write: Write::Plain,
                },
                Step::RawSql {
                    sql: "DELETE FROM products WHERE id = 250",
                },
                // Deleted and written again: a change.
                Step::DeleteProduct {
                    id: 6,
                    write: Write::Plain,
                },
                Step::InsertProducts {
                    rows: vec![new_product(6, 1)],
                    write: Insert::Plain,
                },
                // A deleted reference row changes its target.
                Step::DeletePriceRecords {
                    up_to: 8,
                    write: Write::Plain,
                },
            ]),
            Step::rolled_back(vec![Step::DeleteProduct {
                id: 7,
                write: Write::Plain,
            }]),
        ])
        .await;
    assert!(trace.transactions[0].is_ok(), "{trace:?}");
    f.settle().await;
    assert_delivered(&mut f, &[6, 8]).await;
    let mut removed: Vec<i64> = vec![5, 250];
    removed.extend(101..=200);
    removed.sort_unstable();
    assert_eq!(
        f.capture().removed(),
        removed,
        "product 7's delete rolled back"
    );
    let mut by_store: Vec<(i64, Vec<i64>)> = f
        .capture()
        .calls()
        .iter()
        .filter(|call| !call.removed.is_empty())
        .map(|call| {
            let mut ids = call.removed.clone();
            ids.sort_unstable();
            (call.store, ids)
        })
        .collect();
    by_store.sort_unstable();
    assert_eq!(
        by_store,
        [(1, vec![5]), (2, (101..=200).collect()), (3, vec![250])],
        "each removal reaches the store its row belonged to"
    );
    let metrics = f.metrics();
    assert_eq!((metrics.ids_removed, metrics.ids_stale), (102, 0));
}

pub async fn plain_diesel_inserts_register_the_rows_they_write<K: Kind>() {
    let mut f = K::open("plain_insert", Setup::default()).await;
    let trace = f
        .run(&[Step::transaction(vec![
            Step::InsertProducts {
                rows: vec![new_product(1001, 1), new_product(1002, 2)],
                write: Insert::Plain,
            },
            Step::InsertPriceRecords {
                rows: [7, 8, 7]
                    .map(|object_id| PriceRecord {
                        object_id,
                        amount_cents: 990,
                    })
                    .to_vec(),
                write: Insert::Plain,
            },
        ])])
        .await;
    assert_committed(&trace);
    assert_eq!(trace.affected, [2, 3]);
    f.settle().await;
    assert_delivered(&mut f, &[7, 8, 1001, 1002]).await;
}

/// Captured where the connection can read the keys a write returns, refused before it runs
/// where it cannot.
pub async fn plain_diesel_upserts_register_the_rows_they_insert_or_update<K: Kind>() {
    let mut f = K::open("plain_upsert", Setup::default()).await;
    // Product 5 exists: updated. Product 1003 does not: inserted.
    let trace = f
        .run(&[Step::transaction(vec![Step::UpsertProducts {
            rows: vec![new_product(5, 1), new_product(1003, 1)],
            cents: 777,
            write: Write::Plain,
        }])])
        .await;
    f.settle().await;
    if K::CAPTURES_PLAIN_UPSERTS {
        assert_committed(&trace);
        assert_delivered(&mut f, &[5, 1003]).await;
        let five = f.capture().calls()[0]
            .rows
            .iter()
            .find(|p| p.id == 5)
            .cloned()
            .unwrap();
        assert_eq!(five.price_cents, 777);
    } else {
        let refused = match &trace.transactions[..] {
            [Err(Failure::Database(Error::QueryBuilderError(error)))] => {
                error.downcast_ref::<CaptureRefused>()
            }
            other => panic!("not refused: {other:?}"),
        };
        assert_eq!(refused.map(CaptureRefused::table), Some("products"));
        assert!(trace.affected.is_empty(), "refused before it ran");
        assert!(f.audited().await.is_empty());
        assert!(f.capture().ids().is_empty());
    }
}

/// A COMMIT rejected by a deferred foreign key hands nothing on. For the backends that check
/// constraints at COMMIT (`PostgreSQL` and `SQLite`; `MySQL` has none).
pub async fn a_commit_that_fails_on_a_deferred_constraint_hands_on_nothing<K: Kind>() {
    let setup = Setup {
        products: 3,
        ..Setup::default()
    };
    let mut f = K::open("deferred", setup).await;
    let trace = f
        .run(&[Step::transaction(vec![
            Step::RaisePrices {
                scope: Scope::All,
                cents: 1,
                write: Write::Typed,
            },
            // Checked only at COMMIT: product 404 does not exist.
            Step::InsertNote { product_id: 404 },
            Step::Checkpoint,
        ])])
        .await;
    assert_eq!(trace.affected, [3, 1], "both statements ran");
    assert_eq!(trace.checkpoints[0].pending_ids, 3);
    assert!(
        matches!(trace.transactions[..], [Err(Failure::Database(_))]),
        "COMMIT must fail: {trace:?}"
    );
    assert!(!is_requested_rollback(&trace.transactions[0]));
    assert_eq!(f.pending_ids(), 0);
    // The connection is usable and later commits carry nothing of the failed one.
    let trace = f
        .run(&[Step::InsertProducts {
            rows: vec![new_product(77, 1)],
            write: Insert::Typed,
        }])
        .await;
    assert!(trace.result.is_ok(), "{trace:?}");
    f.settle().await;
    assert_delivered(&mut f, &[77]).await;
}

/// For the backends with `RETURNING`: an insert learns keys the database generates.
pub async fn a_key_the_database_generates_is_registered_from_returning<K: Kind>() {
    let setup = Setup {
        products: 0,
        ..Setup::default()
    };
    let mut f = K::open("generated", setup).await;
    let rows = ["first", "second"]
        .map(|title| NewListing {
            store_id: 4,
            title: title.into(),
        })
        .to_vec();
    let trace = f
        .run(&[Step::transaction(vec![Step::InsertListings { rows }])])
        .await;
    assert_committed(&trace);
    assert_eq!(trace.affected, [2]);
    f.settle().await;
    let stored = f.listing_ids().await;
    assert_eq!(stored.len(), 2);
    let delivered = f.capture().listings();
    assert_eq!(delivered.iter().map(|l| l.id).collect::<Vec<_>>(), stored);
    assert_eq!(
        delivered
            .iter()
            .map(|l| l.title.as_str())
            .collect::<Vec<_>>(),
        ["first", "second"]
    );
}

/// The store of each product the fixture seeded: ids `1..=per_store` in store 1, and so on.
fn seeded_store(id: i64, setup: &Setup) -> i64 {
    (id - 1) / setup.per_store + 1
}

pub async fn each_batch_carries_its_stores_row_from_the_resolve_query<K: Kind>() {
    let mut f = K::open("store_rows", Setup::default()).await;
    // Store 2 has no row: its products still load, through the left join, without one.
    let trace = f
        .run(&[
            Step::RawSql {
                sql: "INSERT INTO stores (id, name, sync_enabled) VALUES (1, 'one', TRUE), (3, 'three', FALSE)",
            },
            Step::transaction(vec![
                Step::set_price(1, 11),
                Step::set_price(2, 22),
                Step::set_price(150, 33),
                // Store 3 only loses a product: no row brings its store along.
                Step::DeleteProduct {
                    id: 300,
                    write: Write::Typed,
                },
            ]),
        ])
        .await;
    assert_committed(&trace);
    f.settle().await;
    assert_delivered(&mut f, &[1, 2, 150]).await;
    let stores = f.all_stores().await;
    assert_eq!(stores.len(), 2, "the stores the database holds");
    let mut calls = f.capture().calls();
    calls.sort_by_key(|c| c.store);
    let seen: Vec<(i64, Option<i64>)> = calls
        .iter()
        .map(|c| (c.store, c.store_row.as_ref().map(|s| s.id)))
        .collect();
    assert_eq!(seen, [(1, Some(1)), (2, None), (3, Some(3))]);
    for call in &calls {
        let in_database = stores.iter().find(|s| s.id == call.store);
        assert_eq!(call.store_row.as_ref(), in_database, "store {}", call.store);
    }
    assert_eq!(calls[2].removed, [300]);
    // One joined query for the rows, one for the store of the batch that only removes.
    assert_eq!(f.metrics().resolve_queries, 2);
}

/// What must have been delivered under a store switch, by the database: the audited changes
/// and removals in stores whose switch is on now (a store without a row gets nothing).
async fn expect_switched_on<K: Kind>(f: &mut K, setup: &Setup) -> (Vec<i64>, Vec<i64>) {
    let enabled: BTreeSet<i64> = f
        .all_stores()
        .await
        .into_iter()
        .filter(|s| s.sync_enabled)
        .map(|s| s.id)
        .collect();
    let mut changed = committed_targets(f).await;
    changed.retain(|&id| enabled.contains(&seeded_store(id, setup)));
    let mut removed = committed_removals(f).await;
    removed.retain(|&id| enabled.contains(&seeded_store(id, setup)));
    (changed, removed)
}

pub async fn a_store_switch_read_at_each_commit_filters_its_batches<K: Kind>() {
    let setup = Setup {
        products: 400,
        sync_switch: true,
        ..Setup::default()
    };
    let mut f = K::open("store_switch", setup.clone()).await;
    let switch = Step::RawSql {
        sql: "INSERT INTO stores (id, name, sync_enabled) VALUES (1, 'one', TRUE), (2, 'two', FALSE), (3, 'three', TRUE)",
    };
    let trace = f.run(&[switch]).await;
    assert!(trace.result.is_ok(), "{trace:?}");

    let first = Step::transaction(vec![
        Step::set_price(1, 1),
        Step::set_price(150, 1),
        Step::set_price(350, 1),
        Step::DeleteProduct {
            id: 250,
            write: Write::Typed,
        },
    ]);
    assert_committed(&f.run(&[first]).await);
    f.settle().await;
    let expected = expect_switched_on(&mut f, &setup).await;
    assert_eq!(expected, (vec![1], vec![250]));
    assert_eq!((f.capture().ids(), f.capture().removed()), expected);
    assert_eq!(
        f.metrics().batches_skipped,
        2,
        "stores 2 (off) and 4 (no row)"
    );

    // Flipped on: the next commit reaches store 2.
    f.reset_records().await;
    let on = Step::RawSql {
        sql: "UPDATE stores SET sync_enabled = TRUE WHERE id = 2",
    };
    let second = Step::transaction(vec![Step::set_price(151, 2)]);
    assert_committed(&f.run(&[on, second]).await);
    f.settle().await;
    let expected = expect_switched_on(&mut f, &setup).await;
    assert_eq!(expected, (vec![151], vec![]));
    assert_eq!((f.capture().ids(), f.capture().removed()), expected);

    // Flipped off in the transaction that changes the store's product: the switch as
    // committed wins.
    f.reset_records().await;
    let third = Step::transaction(vec![
        Step::RawSql {
            sql: "UPDATE stores SET sync_enabled = FALSE WHERE id = 1",
        },
        Step::set_price(2, 3),
        Step::set_price(152, 3),
    ]);
    assert_committed(&f.run(&[third]).await);
    f.settle().await;
    let expected = expect_switched_on(&mut f, &setup).await;
    assert_eq!(expected, (vec![152], vec![]));
    assert_eq!((f.capture().ids(), f.capture().removed()), expected);
    assert_eq!(f.metrics().batches_skipped, 3, "and store 1, now off");
    assert_eq!(f.dead_letter_count(), 0, "a skipped batch is not an error");
}

/// Instantiates the suite's tests that hold on every backend: `$test!($kind, name)` turns one
/// test body into a test of the caller's kind.
#[allow(unused_macros)] // Only the suite's two binaries instantiate it.
macro_rules! behaviour_suite {
    ($test:ident, $kind:ty) => {
        $test!($kind, ids_are_deduplicated_within_a_transaction);
        $test!($kind, rollback_drops_every_id);
        $test!($kind, user_error_rolls_back_and_drops_ids);
        $test!($kind, rolled_back_savepoint_drops_only_its_ids);
        $test!($kind, released_savepoint_merges_into_its_parent);
        $test!($kind, nothing_is_handed_on_before_the_outermost_commit);
        $test!($kind, write_outside_a_transaction_is_handed_on_at_once);
        $test!($kind, insert_one_registers_its_id);
        $test!($kind, insert_many_registers_every_id);
        $test!(
            $kind,
            keys_from_rows_insert_registers_the_keys_its_rows_carry
        );
        $test!($kind, save_changes_registers_the_saved_row);
        $test!($kind, changeset_update_registers_the_row);
        $test!($kind, bulk_update_by_filter_registers_every_affected_id);
        $test!($kind, bulk_delete_by_filter_registers_every_affected_target);
        $test!($kind, upsert_registers_inserted_and_updated_ids);
        $test!($kind, a_typed_delete_of_a_product_is_delivered_as_a_removal);
        $test!(
            $kind,
            deleted_products_reach_their_stores_handler_as_removals
        );
        $test!(
            $kind,
            mark_changed_registers_writes_run_on_the_inner_connection
        );
        $test!($kind, reference_model_registers_its_targets_id);
        $test!($kind, stale_ids_are_skipped);
        $test!($kind, one_handler_call_per_store_holding_the_committed_rows);
        $test!($kind, a_hundred_thousand_ids_in_one_transaction);
        $test!(
            $kind,
            each_batch_carries_its_stores_row_from_the_resolve_query
        );
        $test!(
            $kind,
            a_store_switch_read_at_each_commit_filters_its_batches
        );
        $test!($kind, test_transaction_is_treated_as_the_outermost);
        $test!(
            $kind,
            plain_diesel_updates_and_deletes_register_every_row_they_change
        );
        $test!($kind, plain_diesel_inserts_register_the_rows_they_write);
        $test!(
            $kind,
            plain_diesel_upserts_register_the_rows_they_insert_or_update
        );
    };
}

/// The tests that need constraints checked at COMMIT and keys learned from `RETURNING`: on
/// `SQLite` and `PostgreSQL`.
#[allow(unused_macros)] // Only the suite's two binaries instantiate it.
macro_rules! commit_and_returning_suite {
    ($test:ident, $kind:ty) => {
        $test!(
            $kind,
            a_commit_that_fails_on_a_deferred_constraint_hands_on_nothing
        );
        $test!(
            $kind,
            a_key_the_database_generates_is_registered_from_returning
        );
    };
}

#[allow(unused_imports)] // as for the macros
pub(crate) use {behaviour_suite, commit_and_returning_suite};
