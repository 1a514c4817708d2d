// What `#[derive(Synced)]` writes for this model (see `src/expand.rs`, `mod tests`):
//
// #[derive(Debug, Synced)]
// #[synced(stor = store_id)]
// pub enum Product {
//     Book { id: i64 },
// }

::core::compile_error! {
    "unknown `synced` option `stor`\nhelp: the options are `store`, `target`, `key` and `crate`; did you mean `store`?"
}
::core::compile_error! {
    "`Synced` cannot be derived for an enum: it syncs the rows of a table\nhelp: `Synced` goes on the struct Diesel maps a table's rows to, like `#[derive(Queryable, Selectable, Synced)] struct Product { id: i64, … }`"
}
#[doc(hidden)]
const _: () = {
    use ::diesel_sync::__private as __diesel_sync;
    #[automatically_derived]
    impl __diesel_sync::Synced for Product
    where
        for<'__diesel_sync> Product: ::core::fmt::Debug + ::core::marker::Send
            + ::core::marker::Sync + 'static,
    {
        type Table = __diesel_sync::fallback::table;
        type Target = Self;
        type KeyColumn = __diesel_sync::fallback::id;
        fn sync_key(&self) -> __diesel_sync::TargetId<Self> {
            __diesel_sync::fallback::Id
        }
    }
    #[automatically_derived]
    impl __diesel_sync::SyncTarget for Product
    where
        for<'__diesel_sync> Product: ::core::fmt::Debug + ::core::marker::Send
            + ::core::marker::Sync + 'static,
    {
        type Id = __diesel_sync::fallback::Id;
        type StoreKey = ();
        type ByIds = ();
        type Store = __diesel_sync::NoStore;
        type Loads = __diesel_sync::LoadsAlone;
        type StoresByKeys = ();
        fn stores_by_keys(_: ::std::vec::Vec<()>) {}
        fn key_of_store(store: &__diesel_sync::NoStore) -> () {
            match *store {}
        }
        fn store_key(&self) -> Self::StoreKey {}
        fn by_ids(ids: ::std::vec::Vec<Self::Id>) -> Self::ByIds {
            ::core::mem::drop(ids)
        }
    }
    #[automatically_derived]
    impl __diesel_sync::KeyInRow for Product
    where
        for<'__diesel_sync> Product: ::core::fmt::Debug + ::core::marker::Send
            + ::core::marker::Sync + 'static,
    {}
    #[automatically_derived]
    impl __diesel_sync::SyncedRows<Self> for Product
    where
        for<'__diesel_sync> Product: ::core::fmt::Debug + ::core::marker::Send
            + ::core::marker::Sync + 'static,
    {
        fn sync_keys(&self) -> ::std::vec::Vec<__diesel_sync::TargetId<Self>> {
            ::std::vec![__diesel_sync::Synced::sync_key(self)]
        }
    }
};
