// What `#[derive(Synced)]` writes for this model (see `src/expand.rs`, `mod tests`):
//
// #[derive(Debug, Clone, Queryable, Selectable, Identifiable, Associations, Synced)]
// #[diesel(table_name = products, belongs_to(Store))]
// #[synced(store = Store)]
// pub struct Product {
//     pub id: i64,
//     pub store_id: i64,
//     pub name: String,
// }

#[doc(hidden)]
const _: () = {
    use ::diesel_sync::__private as __diesel_sync;
    #[automatically_derived]
    impl __diesel_sync::Synced for Product
    where
        for<'__diesel_sync> Product: ::core::fmt::Debug + ::core::marker::Send
            + ::core::marker::Sync + 'static,
        for<'__diesel_sync> i64: __diesel_sync::KeyBounds,
        for<'__diesel_sync> Store: __diesel_sync::StoreModel<i64>,
    {
        type Table = products::table;
        type Target = Self;
        type KeyColumn = products::id;
        fn sync_key(&self) -> __diesel_sync::TargetId<Self> {
            __diesel_sync::field(&self.id)
        }
    }
    #[automatically_derived]
    impl __diesel_sync::SyncTarget for Product
    where
        for<'__diesel_sync> Product: ::core::fmt::Debug + ::core::marker::Send
            + ::core::marker::Sync + 'static,
        for<'__diesel_sync> i64: __diesel_sync::KeyBounds,
        for<'__diesel_sync> Store: __diesel_sync::StoreModel<i64>,
    {
        type Id = i64;
        type StoreKey = i64;
        type ByIds = __diesel_sync::diesel::dsl::Filter<
            __diesel_sync::diesel::dsl::LeftJoinOn<
                products::table,
                <Store as __diesel_sync::diesel::associations::HasTable>::Table,
                __diesel_sync::diesel::dsl::Eq<
                    products::store_id,
                    <<Store as __diesel_sync::diesel::associations::HasTable>::Table as __diesel_sync::diesel::Table>::PrimaryKey,
                >,
            >,
            __diesel_sync::diesel::dsl::EqAny<products::id, ::std::vec::Vec<i64>>,
        >;
        type Store = Store;
        type Loads = __diesel_sync::LoadsWithStore;
        type StoresByKeys = __diesel_sync::diesel::dsl::Filter<
            <Store as __diesel_sync::diesel::associations::HasTable>::Table,
            __diesel_sync::diesel::dsl::EqAny<
                <<Store as __diesel_sync::diesel::associations::HasTable>::Table as __diesel_sync::diesel::Table>::PrimaryKey,
                ::std::vec::Vec<i64>,
            >,
        >;
        fn stores_by_keys(keys: ::std::vec::Vec<i64>) -> Self::StoresByKeys {
            use __diesel_sync::diesel::{ExpressionMethods as _, QueryDsl as _};
            let stores = <Store as __diesel_sync::diesel::associations::HasTable>::table();
            stores
                .filter(__diesel_sync::diesel::Table::primary_key(&stores).eq_any(keys))
        }
        fn key_of_store(store: &Store) -> i64 {
            <Store as __diesel_sync::StoreModel<i64>>::store_key(store)
        }
        fn store_key(&self) -> Self::StoreKey {
            __diesel_sync::field(&self.store_id)
        }
        fn by_ids(ids: ::std::vec::Vec<Self::Id>) -> Self::ByIds {
            use __diesel_sync::diesel::{
                ExpressionMethods as _, JoinOnDsl as _, QueryDsl as _,
            };
            products::table
                .left_join(
                    <Store as __diesel_sync::diesel::associations::HasTable>::table()
                        .on(
                            products::store_id
                                .eq(
                                    __diesel_sync::diesel::Table::primary_key(
                                        &<Store as __diesel_sync::diesel::associations::HasTable>::table(),
                                    ),
                                ),
                        ),
                )
                .filter(products::id.eq_any(ids))
        }
    }
    #[automatically_derived]
    impl __diesel_sync::SyncedTable<Product> for products::table
    where
        for<'__diesel_sync> Product: ::core::fmt::Debug + ::core::marker::Send
            + ::core::marker::Sync + 'static,
        for<'__diesel_sync> i64: __diesel_sync::KeyBounds,
        for<'__diesel_sync> Store: __diesel_sync::StoreModel<i64>,
    {}
    #[automatically_derived]
    impl __diesel_sync::KeyInRow for Product
    where
        for<'__diesel_sync> Product: ::core::fmt::Debug + ::core::marker::Send
            + ::core::marker::Sync + 'static,
        for<'__diesel_sync> i64: __diesel_sync::KeyBounds,
        for<'__diesel_sync> Store: __diesel_sync::StoreModel<i64>,
    {}
    #[automatically_derived]
    impl __diesel_sync::SyncedRows<Self> for Product
    where
        for<'__diesel_sync> Product: ::core::fmt::Debug + ::core::marker::Send
            + ::core::marker::Sync + 'static,
        for<'__diesel_sync> i64: __diesel_sync::KeyBounds,
        for<'__diesel_sync> Store: __diesel_sync::StoreModel<i64>,
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
        .deletes(::core::option::Option::Some(< products::store_id as
        __diesel_sync::diesel::Column > ::NAME)); let table = (&&
        __diesel_sync::TableProbe:: < products::table > ::new()).sql_name(); (&&
        __diesel_sync::ModelProbe:: < Product > ::new()).facts(table
        .unwrap_or("products"), key, deletes) })
    }
    __diesel_sync::assert_target_model::<Product>();
    __diesel_sync::assert_id::<i64>();
    __diesel_sync::assert_store_key::<i64>();
    __diesel_sync::assert_store_model::<Store, i64>();
};
