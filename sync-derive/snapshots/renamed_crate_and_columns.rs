// What `#[derive(Synced)]` writes for this model (see `src/expand.rs`, `mod tests`):
//
// #[derive(Debug, Clone, Queryable, Selectable, my_sync::Synced)]
// #[diesel(table_name = schema::products, primary_key(sku))]
// #[synced(crate = "my_sync", store = shop)]
// pub struct Product {
//     pub sku: String,
//     #[diesel(column_name = store_id)]
//     pub shop: i64,
// }

#[doc(hidden)]
const _: () = {
    use my_sync::__private as __diesel_sync;
    #[automatically_derived]
    impl __diesel_sync::Synced for Product
    where
        for<'__diesel_sync> Product: ::core::fmt::Debug + ::core::marker::Send
            + ::core::marker::Sync + 'static,
        for<'__diesel_sync> String: __diesel_sync::KeyBounds,
        for<'__diesel_sync> i64: __diesel_sync::KeyBounds,
    {
        type Table = schema::products::table;
        type Target = Self;
        type KeyColumn = schema::products::sku;
        fn sync_key(&self) -> __diesel_sync::TargetId<Self> {
            __diesel_sync::field(&self.sku)
        }
    }
    #[automatically_derived]
    impl __diesel_sync::SyncTarget for Product
    where
        for<'__diesel_sync> Product: ::core::fmt::Debug + ::core::marker::Send
            + ::core::marker::Sync + 'static,
        for<'__diesel_sync> String: __diesel_sync::KeyBounds,
        for<'__diesel_sync> i64: __diesel_sync::KeyBounds,
    {
        type Id = String;
        type StoreKey = i64;
        type ByIds = __diesel_sync::diesel::dsl::Filter<
            schema::products::table,
            __diesel_sync::diesel::dsl::EqAny<
                schema::products::sku,
                ::std::vec::Vec<String>,
            >,
        >;
        type Store = __diesel_sync::NoStore;
        type Loads = __diesel_sync::LoadsAlone;
        type StoresByKeys = ();
        fn stores_by_keys(_: ::std::vec::Vec<i64>) {}
        fn key_of_store(store: &__diesel_sync::NoStore) -> i64 {
            match *store {}
        }
        fn store_key(&self) -> Self::StoreKey {
            __diesel_sync::field(&self.shop)
        }
        fn by_ids(ids: ::std::vec::Vec<Self::Id>) -> Self::ByIds {
            use __diesel_sync::diesel::{
                ExpressionMethods as _, JoinOnDsl as _, QueryDsl as _,
            };
            schema::products::table.filter(schema::products::sku.eq_any(ids))
        }
    }
    #[automatically_derived]
    impl __diesel_sync::SyncedTable<Product> for schema::products::table
    where
        for<'__diesel_sync> Product: ::core::fmt::Debug + ::core::marker::Send
            + ::core::marker::Sync + 'static,
        for<'__diesel_sync> String: __diesel_sync::KeyBounds,
        for<'__diesel_sync> i64: __diesel_sync::KeyBounds,
    {}
    #[automatically_derived]
    impl __diesel_sync::KeyInRow for Product
    where
        for<'__diesel_sync> Product: ::core::fmt::Debug + ::core::marker::Send
            + ::core::marker::Sync + 'static,
        for<'__diesel_sync> String: __diesel_sync::KeyBounds,
        for<'__diesel_sync> i64: __diesel_sync::KeyBounds,
    {}
    #[automatically_derived]
    impl __diesel_sync::SyncedRows<Self> for Product
    where
        for<'__diesel_sync> Product: ::core::fmt::Debug + ::core::marker::Send
            + ::core::marker::Sync + 'static,
        for<'__diesel_sync> String: __diesel_sync::KeyBounds,
        for<'__diesel_sync> i64: __diesel_sync::KeyBounds,
    {
        fn sync_keys(&self) -> ::std::vec::Vec<__diesel_sync::TargetId<Self>> {
            ::std::vec![__diesel_sync::Synced::sync_key(self)]
        }
    }
    __diesel_sync::inventory::submit! {
        __diesel_sync::SyncedModel::new(|| { use __diesel_sync:: { NamedTable as _,
        OpaqueKey as _, OpaqueStore as _, ReadableKey as _, ReadableStore as _,
        Registered as _, UnnamedTable as _, Unregistered as _, }; let key = (&&
        __diesel_sync::KeyProbe:: < Product > ::new()).codec(); let deletes = (&&
        __diesel_sync::StoreProbe:: < Product > ::new())
        .deletes(::core::option::Option::Some(< schema::products::store_id as
        __diesel_sync::diesel::Column > ::NAME)); let table = (&&
        __diesel_sync::TableProbe:: < schema::products::table > ::new()).sql_name(); (&&
        __diesel_sync::ModelProbe:: < Product > ::new()).facts(table
        .unwrap_or("products"), key, deletes) })
    }
    __diesel_sync::assert_target_model::<Product>();
    __diesel_sync::assert_id::<String>();
    __diesel_sync::assert_store_key::<i64>();
};
