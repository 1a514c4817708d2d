// What `#[derive(Synced)]` writes for this model (see `src/expand.rs`, `mod tests`):
//
// #[derive(Debug, Clone, Insertable, Synced)]
// #[diesel(table_name = price_records)]
// #[synced(target = Product, key = object_id)]
// pub struct PriceRecord {
//     pub object_id: i64,
//     pub amount_cents: i64,
// }

#[doc(hidden)]
const _: () = {
    use ::diesel_sync::__private as __diesel_sync;
    #[automatically_derived]
    impl __diesel_sync::Synced for PriceRecord
    where
        for<'__diesel_sync> PriceRecord: ::core::marker::Send + 'static,
        for<'__diesel_sync> Product: __diesel_sync::SyncTarget<Id = i64>,
    {
        type Table = price_records::table;
        type Target = Product;
        type KeyColumn = price_records::object_id;
        fn sync_key(&self) -> __diesel_sync::TargetId<Self> {
            __diesel_sync::field(&self.object_id)
        }
    }
    #[automatically_derived]
    impl __diesel_sync::SyncedTable<PriceRecord> for price_records::table
    where
        for<'__diesel_sync> PriceRecord: ::core::marker::Send + 'static,
        for<'__diesel_sync> Product: __diesel_sync::SyncTarget<Id = i64>,
    {}
    #[automatically_derived]
    impl __diesel_sync::KeyInRow for PriceRecord
    where
        for<'__diesel_sync> PriceRecord: ::core::marker::Send + 'static,
        for<'__diesel_sync> Product: __diesel_sync::SyncTarget<Id = i64>,
    {}
    #[automatically_derived]
    impl __diesel_sync::SyncedRows<Product> for PriceRecord
    where
        for<'__diesel_sync> PriceRecord: ::core::marker::Send + 'static,
        for<'__diesel_sync> Product: __diesel_sync::SyncTarget<Id = i64>,
    {
        fn sync_keys(&self) -> ::std::vec::Vec<__diesel_sync::TargetId<Self>> {
            ::std::vec![__diesel_sync::Synced::sync_key(self)]
        }
    }
    __diesel_sync::inventory::submit! {
        __diesel_sync::SyncedModel::new(|| { use __diesel_sync:: { NamedTable as _,
        OpaqueKey as _, OpaqueStore as _, ReadableKey as _, ReadableStore as _,
        Registered as _, UnnamedTable as _, Unregistered as _, }; let key = (&&
        __diesel_sync::KeyProbe:: < PriceRecord > ::new()).codec(); let deletes =
        __diesel_sync::Deletes::change(); let table = (&& __diesel_sync::TableProbe:: <
        price_records::table > ::new()).sql_name(); (&& __diesel_sync::ModelProbe:: <
        PriceRecord > ::new()).facts(table.unwrap_or("price_records"), key, deletes) })
    }
    __diesel_sync::assert_model::<PriceRecord>();
    __diesel_sync::assert_target::<Product, i64>();
};
