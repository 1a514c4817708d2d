//! r2d2 pools whose connections are synchronous [`SyncedConnection`]s sharing one registry.

use std::fmt;

use diesel::r2d2::{ConnectionManager, Error, ManageConnection, R2D2Connection};

use super::connection::{CaptureConnection, SyncedConnection};
use crate::registry::Registry;

/// An r2d2 connection manager that builds each connection with Diesel's [`ConnectionManager`]
/// and wraps it in a [`SyncedConnection`] with the manager's registry.
///
/// Diesel's own `ConnectionManager<SyncedConnection<C>>` would connect through
/// [`diesel::Connection::establish`], which has no registry to give.
pub struct SyncedConnectionManager<C> {
    inner: ConnectionManager<C>,
    registry: Registry<SyncedConnection<C>>,
}

impl<C> SyncedConnectionManager<C> {
    /// A manager connecting to `database_url`, whose connections hand ids to `registry`.
    pub fn new(database_url: impl Into<String>, registry: Registry<SyncedConnection<C>>) -> Self {
        Self {
            inner: ConnectionManager::new(database_url),
            registry,
        }
    }
}

impl<C: R2D2Connection + CaptureConnection + Send> SyncedConnection<C> {
    /// An r2d2 pool manager whose connections are [`SyncedConnection`]s sharing `registry`.
    ///
    /// From now on the registry resolves committed ids on a connection of its own to
    /// `database_url`, on its own runtime: a COMMIT returns without waiting for the resolve
    /// query, and the commits of a busy pool share their resolve queries. (A
    /// [durable](crate::RegistryBuilder::durable) registry's worker does so already.)
    ///
    /// ```no_run
    /// # use diesel_sync_runtime as diesel_sync;
    /// # fn build(registry: diesel_sync::Registry<diesel_sync::blocking::SyncedConnection<diesel::SqliteConnection>>) -> Result<(), diesel::r2d2::PoolError> {
    /// use diesel::r2d2::Pool;
    /// use diesel::SqliteConnection;
    /// use diesel_sync::blocking::SyncedConnection;
    ///
    /// let manager = SyncedConnection::<SqliteConnection>::pool_manager("shop.db", registry);
    /// let pool = Pool::builder().max_size(16).build(manager)?;
    /// let mut conn = pool.get()?; // dereferences to a `SyncedConnection<SqliteConnection>`
    /// # Ok(()) }
    /// ```
    pub fn pool_manager(
        database_url: impl Into<String>,
        registry: Registry<Self>,
    ) -> SyncedConnectionManager<C> {
        let database_url = database_url.into();
        crate::offload::start(&registry, &database_url);
        SyncedConnectionManager::new(database_url, registry)
    }
}

impl<C> ManageConnection for SyncedConnectionManager<C>
where
    C: R2D2Connection + CaptureConnection + Send,
{
    type Connection = SyncedConnection<C>;
    type Error = Error;

    fn connect(&self) -> Result<SyncedConnection<C>, Error> {
        let inner = self.inner.connect()?;
        Ok(SyncedConnection::new(inner, self.registry.clone()))
    }

    fn is_valid(&self, conn: &mut SyncedConnection<C>) -> Result<(), Error> {
        self.inner.is_valid(conn.inner_mut())
    }

    fn has_broken(&self, conn: &mut SyncedConnection<C>) -> bool {
        self.inner.has_broken(conn.inner_mut())
    }
}

impl<C> fmt::Debug for SyncedConnectionManager<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncedConnectionManager")
            .field("inner", &self.inner)
            .field("registry", &self.registry)
            .finish()
    }
}
