//! diesel-async pools (deadpool, bb8) whose connections route through the same collector.

use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};

use crate::connection::{CaptureConnection, SyncedConnection};
use crate::registry::Registry;

impl<C> SyncedConnection<C>
where
    C: CaptureConnection,
{
    /// A pool manager whose connections are [`SyncedConnection`]s sharing `registry`.
    ///
    /// From now on the registry resolves committed ids on a connection of its own to
    /// `database_url`, on its own runtime: `transaction()` returns right after COMMIT, and the
    /// commits of a busy pool share their resolve queries. (A
    /// [durable](crate::RegistryBuilder::durable) registry's worker does so already.)
    ///
    /// ```no_run
    /// # use diesel_sync_runtime as diesel_sync;
    /// # #[cfg(feature = "deadpool")]
    /// # fn build(registry: diesel_sync::Registry<diesel_sync::SyncedConnection<diesel_async::AsyncPgConnection>>) {
    /// use diesel_async::pooled_connection::deadpool::Pool;
    /// use diesel_async::AsyncPgConnection;
    /// use diesel_sync::SyncedConnection;
    ///
    /// let manager = SyncedConnection::<AsyncPgConnection>::pool_manager("postgres://localhost/shop", registry);
    /// let pool = Pool::builder(manager).max_size(16).build().unwrap();
    /// # }
    /// ```
    pub fn pool_manager(
        database_url: impl Into<String>,
        registry: Registry<Self>,
    ) -> AsyncDieselConnectionManager<Self> {
        let database_url = database_url.into();
        crate::offload::start(&registry, &database_url);
        let mut config = ManagerConfig::<Self>::default();
        config.custom_setup = Box::new(move |url| {
            let registry = registry.clone();
            let url = url.to_owned();
            Box::pin(async move { Ok(Self::new(C::establish(&url).await?, registry)) })
        });
        AsyncDieselConnectionManager::new_with_config(database_url, config)
    }
}
