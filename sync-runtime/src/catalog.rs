//! The synced models of the program, by table: `#[derive(Synced)]` registers each one, so a
//! connection knows which statements to capture without a hand-kept list.

use std::any::{type_name, Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::OnceLock;

use diesel::internal::table_macro::{Identifier, StaticQueryFragment};
use diesel::Column;

use crate::collector::Frame;
use crate::synced::{SyncTarget, Synced, TargetId};

/// One synced model, as the derive registers it. Not public API.
#[doc(hidden)]
pub struct SyncedModel {
    describe: fn() -> Option<ModelFacts>,
}

impl SyncedModel {
    /// Registers the model `describe` tells about (`None`: a model whose derive reported an
    /// error, so the program does not compile anyway).
    pub const fn new(describe: fn() -> Option<ModelFacts>) -> Self {
        Self { describe }
    }
}

inventory::collect!(SyncedModel);

/// What a connection needs to know of a synced model to capture writes to its table. Not
/// public API.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct ModelFacts {
    pub(crate) model: &'static str,
    /// The table's SQL name.
    pub(crate) table: &'static str,
    /// The column holding the target's id.
    pub(crate) key_column: &'static str,
    pub(crate) target: TypeId,
    pub(crate) target_name: &'static str,
    /// How keys read from the database become the target's ids; `None` when the id type is not
    /// one capture can read (then writes to the table are refused, never missed).
    pub(crate) key: Option<KeyCodec>,
    /// What deleting a row of the table registers.
    pub(crate) deletes: Deletes,
}

impl ModelFacts {
    /// The facts of model `M`, whose table is called `table` in SQL.
    pub fn of<M: Synced>(table: &'static str, key: Option<KeyCodec>, deletes: Deletes) -> Self {
        Self {
            model: type_name::<M>(),
            table,
            key_column: <M::KeyColumn as Column>::NAME,
            target: TypeId::of::<M::Target>(),
            target_name: type_name::<M::Target>(),
            key,
            deletes,
        }
    }
}

/// What deleting a row of a synced table registers. Not public API.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub enum Deletes {
    /// A change of the target the row names: the row of a reference model.
    Change,
    /// The removal of the row, with the store it belonged to: the row of a target.
    Removal(Removal),
    /// Nothing capture can read: a target whose store key type it cannot decode. Deletes are
    /// refused.
    Unreadable,
}

impl Deletes {
    /// What a reference model's deletes register.
    pub const fn change() -> Self {
        Self::Change
    }
}

/// How a deleted target row is registered as a removal. Not public API.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct Removal {
    /// The store column and its kind, read with the key; `None` when the target has no store
    /// column (every row belongs to the store `()`).
    pub(crate) store: Option<(&'static str, KeyKind)>,
    /// Adds the keys, each with its store key (in step, when there is a store column), to the
    /// frame as removals; false when one does not fit its type.
    pub(crate) remove: fn(&mut Frame, Vec<DynKey>, Vec<DynKey>) -> bool,
    /// The values of store keys of the target, given as a `Vec` of its store key type.
    pub(crate) encode_stores: fn(&dyn Any) -> Option<Vec<Option<DynKey>>>,
}

impl Removal {
    /// The store column read with the key, if any.
    pub(crate) fn store_column(self) -> Option<&'static str> {
        self.store.map(|(column, _)| column)
    }
}

impl fmt::Debug for Removal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Removal")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ModelFacts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelFacts")
            .field("model", &self.model)
            .field("table", &self.table)
            .field("key_column", &self.key_column)
            .field("target", &self.target_name)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for SyncedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.describe)() {
            Some(facts) => facts.fmt(f),
            None => f.write_str("SyncedModel(unregistered)"),
        }
    }
}

/// Asks, in the derive's code, whether the model's `Synced` impl applies ([`Registered`]) or
/// its derive reported an error ([`Unregistered`]), so the registration adds no error of its
/// own. Not public API.
#[doc(hidden)]
pub struct ModelProbe<M>(PhantomData<fn() -> M>);

impl<M> ModelProbe<M> {
    /// The probe of `M`.
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<M> Default for ModelProbe<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M> fmt::Debug for ModelProbe<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ModelProbe")
    }
}

/// See [`ModelProbe`]. Not public API.
#[doc(hidden)]
pub trait Registered {
    /// The model's facts.
    fn facts(
        &self,
        table: &'static str,
        key: Option<KeyCodec>,
        deletes: Deletes,
    ) -> Option<ModelFacts>;
}

impl<M: Synced> Registered for &ModelProbe<M> {
    fn facts(
        &self,
        table: &'static str,
        key: Option<KeyCodec>,
        deletes: Deletes,
    ) -> Option<ModelFacts> {
        Some(ModelFacts::of::<M>(table, key, deletes))
    }
}

/// See [`ModelProbe`]. Not public API.
#[doc(hidden)]
pub trait Unregistered {
    /// None: the model's derive failed.
    fn facts(
        &self,
        table: &'static str,
        key: Option<KeyCodec>,
        deletes: Deletes,
    ) -> Option<ModelFacts>;
}

impl<M> Unregistered for ModelProbe<M> {
    fn facts(&self, _: &'static str, _: Option<KeyCodec>, _: Deletes) -> Option<ModelFacts> {
        None
    }
}

/// Asks, in the derive's code, for the SQL name `table!` gave a table (`#[sql_name = "…"]`
/// included): [`NamedTable`] applies to a table of one plain name, [`UnnamedTable`] to the rest
/// (a schema-qualified table), whose derive-side name is used instead. Not public API.
#[doc(hidden)]
pub struct TableProbe<T>(PhantomData<fn() -> T>);

impl<T> TableProbe<T> {
    /// The probe of table `T`.
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T> Default for TableProbe<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for TableProbe<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TableProbe")
    }
}

/// See [`TableProbe`]. Not public API.
#[doc(hidden)]
pub trait NamedTable {
    /// The table's SQL name.
    fn sql_name(&self) -> Option<&'static str>;
}

impl<T> NamedTable for &TableProbe<T>
where
    T: StaticQueryFragment<Component = Identifier<'static>>,
{
    fn sql_name(&self) -> Option<&'static str> {
        Some(T::STATIC_COMPONENT.0)
    }
}

/// See [`TableProbe`]. Not public API.
#[doc(hidden)]
pub trait UnnamedTable {
    /// None: the name is not a plain identifier.
    fn sql_name(&self) -> Option<&'static str>;
}

impl<T> UnnamedTable for TableProbe<T> {
    fn sql_name(&self) -> Option<&'static str> {
        None
    }
}

/// A key as the database returned it, before it becomes a target's id. Not public API.
#[doc(hidden)]
///
/// In the outbox, an integer key is a JSON number and a text key a JSON string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum DynKey {
    Int(i64),
    Text(String),
}

/// The SQL type a key is read as. Not public API.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    SmallInt,
    Integer,
    BigInt,
    Text,
}

/// How a model's keys are read and registered. Not public API.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct KeyCodec {
    pub(crate) kind: KeyKind,
    /// Adds keys to the frame as ids of the target; false when a key does not fit the id type.
    pub(crate) insert: fn(&mut Frame, Vec<DynKey>) -> bool,
    /// The keys of ids of the target, given as a `Vec` of its id type (the outbox's record).
    pub(crate) encode: fn(&dyn Any) -> Option<Vec<DynKey>>,
}

impl fmt::Debug for KeyCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyCodec")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// An id type capture can read from a returned row.
pub trait CaptureKey: Sized {
    /// The SQL type the key is read as.
    #[doc(hidden)]
    const KIND: KeyKind;
    /// The id, when the key fits the type.
    #[doc(hidden)]
    fn from_key(key: DynKey) -> Option<Self>;
    /// The key of the id.
    #[doc(hidden)]
    fn to_key(&self) -> DynKey;
}

macro_rules! int_keys {
    ($($ty:ty => $kind:ident),*) => {$(
        impl CaptureKey for $ty {
            const KIND: KeyKind = KeyKind::$kind;
            fn from_key(key: DynKey) -> Option<Self> {
                match key {
                    DynKey::Int(value) => value.try_into().ok(),
                    DynKey::Text(_) => None,
                }
            }
            fn to_key(&self) -> DynKey {
                DynKey::Int((*self).into())
            }
        }
    )*};
}

int_keys!(i16 => SmallInt, i32 => Integer, i64 => BigInt);

impl CaptureKey for String {
    const KIND: KeyKind = KeyKind::Text;
    fn from_key(key: DynKey) -> Option<Self> {
        match key {
            DynKey::Text(value) => Some(value),
            DynKey::Int(_) => None,
        }
    }
    fn to_key(&self) -> DynKey {
        DynKey::Text(self.clone())
    }
}

/// Asks, in the derive's code where the model is a concrete type, whether its id type is one
/// capture can read (autoref specialization: [`ReadableKey`] applies when it is, [`OpaqueKey`]
/// otherwise). Not public API.
#[doc(hidden)]
pub struct KeyProbe<M>(PhantomData<fn() -> M>);

impl<M> KeyProbe<M> {
    /// The probe of `M`.
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<M> Default for KeyProbe<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M> fmt::Debug for KeyProbe<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyProbe")
    }
}

/// See [`KeyProbe`]. Not public API.
#[doc(hidden)]
pub trait ReadableKey {
    /// How `M`'s keys are read.
    fn codec(&self) -> Option<KeyCodec>;
}

impl<M: Synced> ReadableKey for &KeyProbe<M>
where
    TargetId<M>: CaptureKey,
{
    fn codec(&self) -> Option<KeyCodec> {
        Some(KeyCodec {
            kind: <TargetId<M> as CaptureKey>::KIND,
            insert: insert_keys::<M>,
            encode: encode_keys::<TargetId<M>>,
        })
    }
}

/// See [`KeyProbe`]. Not public API.
#[doc(hidden)]
pub trait OpaqueKey {
    /// None: `M`'s keys cannot be read.
    fn codec(&self) -> Option<KeyCodec>;
}

impl<M> OpaqueKey for KeyProbe<M> {
    fn codec(&self) -> Option<KeyCodec> {
        None
    }
}

/// A store key type capture can read from the row a delete returns: `()` (no store column,
/// nothing to read) or a type a key can be. Not public API.
#[doc(hidden)]
pub trait CaptureStore: Sized {
    /// The SQL type the store column is read as; `None` for `()`.
    const KIND: Option<KeyKind>;
    /// The store key, when the value read fits the type.
    fn from_store(value: Option<DynKey>) -> Option<Self>;
    /// The value the store key is written as: `None` for `()`.
    fn to_store(&self) -> Option<DynKey>;
}

impl CaptureStore for () {
    const KIND: Option<KeyKind> = None;
    fn from_store(_: Option<DynKey>) -> Option<Self> {
        Some(())
    }
    fn to_store(&self) -> Option<DynKey> {
        None
    }
}

impl<K: CaptureKey> CaptureStore for K {
    const KIND: Option<KeyKind> = Some(K::KIND);
    fn from_store(value: Option<DynKey>) -> Option<Self> {
        value.and_then(K::from_key)
    }
    fn to_store(&self) -> Option<DynKey> {
        Some(self.to_key())
    }
}

/// Asks, in the derive's code for a target, whether its id and store key types are ones a
/// delete's returned row can be read as ([`ReadableStore`]), or not ([`OpaqueStore`]). Not
/// public API.
#[doc(hidden)]
pub struct StoreProbe<M>(PhantomData<fn() -> M>);

impl<M> StoreProbe<M> {
    /// The probe of `M`.
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<M> Default for StoreProbe<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M> fmt::Debug for StoreProbe<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreProbe")
    }
}

/// See [`StoreProbe`]. Not public API.
#[doc(hidden)]
pub trait ReadableStore {
    /// Removals, with the store read from `column`.
    fn deletes(&self, column: Option<&'static str>) -> Deletes;
}

impl<M: SyncTarget> ReadableStore for &StoreProbe<M>
where
    M::Id: CaptureKey,
    M::StoreKey: CaptureStore,
{
    fn deletes(&self, column: Option<&'static str>) -> Deletes {
        Deletes::Removal(Removal {
            store: column.zip(<M::StoreKey as CaptureStore>::KIND),
            remove: remove_keys::<M>,
            encode_stores: encode_stores::<M::StoreKey>,
        })
    }
}

/// See [`StoreProbe`]. Not public API.
#[doc(hidden)]
pub trait OpaqueStore {
    /// Unreadable: deletes are refused.
    fn deletes(&self, column: Option<&'static str>) -> Deletes;
}

impl<M> OpaqueStore for StoreProbe<M> {
    fn deletes(&self, _: Option<&'static str>) -> Deletes {
        Deletes::Unreadable
    }
}

fn remove_keys<M: SyncTarget>(frame: &mut Frame, keys: Vec<DynKey>, stores: Vec<DynKey>) -> bool
where
    M::Id: CaptureKey,
    M::StoreKey: CaptureStore,
{
    let pending = frame.pending_mut::<M>();
    let mut stores = stores.into_iter();
    let mut fits = true;
    for key in keys {
        let store = <M::StoreKey as CaptureStore>::KIND.and_then(|_| stores.next());
        match (M::Id::from_key(key), M::StoreKey::from_store(store)) {
            (Some(id), Some(store)) => pending.remove(id, store),
            _ => fits = false,
        }
    }
    fits
}

fn encode_keys<K: CaptureKey + 'static>(ids: &dyn Any) -> Option<Vec<DynKey>> {
    let ids = ids.downcast_ref::<Vec<K>>()?;
    Some(ids.iter().map(CaptureKey::to_key).collect())
}

fn encode_stores<S: CaptureStore + 'static>(stores: &dyn Any) -> Option<Vec<Option<DynKey>>> {
    let stores = stores.downcast_ref::<Vec<S>>()?;
    Some(stores.iter().map(CaptureStore::to_store).collect())
}

fn insert_keys<M: Synced>(frame: &mut Frame, keys: Vec<DynKey>) -> bool
where
    TargetId<M>: CaptureKey,
{
    let ids = frame.ids_mut::<M::Target>();
    let mut fits = true;
    for key in keys {
        match TargetId::<M>::from_key(key) {
            Some(id) => {
                ids.insert(id);
            }
            None => fits = false,
        }
    }
    fits
}

/// Registers a captured write's keys as ids of its target (a deleted target's as removals); a
/// key that does not fit the id type is reported, never silently dropped.
pub(crate) fn insert_captured(
    frame: &mut Frame,
    capture: &crate::capture::Capture,
    captured: crate::capture::Captured,
) {
    let fits = match capture.removal {
        Some(removal) => (removal.remove)(frame, captured.keys, captured.stores),
        None => (capture.codec.insert)(frame, captured.keys),
    };
    if !fits {
        tracing::error!(
            table = capture.model.table,
            target = capture.model.target_name,
            "a captured key does not fit the target's id type; register it with `mark_changed`"
        );
    }
}

/// Every registered model, by table name.
#[derive(Debug)]
pub(crate) struct Catalog {
    by_table: HashMap<&'static str, Vec<ModelFacts>>,
}

impl Catalog {
    /// The program's catalog, read from the derive's registrations on first use.
    pub(crate) fn get() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(|| {
            Self::new(
                inventory::iter::<SyncedModel>
                    .into_iter()
                    .filter_map(|m| (m.describe)()),
            )
        })
    }

    pub(crate) fn new(models: impl IntoIterator<Item = ModelFacts>) -> Self {
        let mut by_table: HashMap<&'static str, Vec<ModelFacts>> = HashMap::new();
        for facts in models {
            tracing::trace!(
                model = facts.model,
                table = facts.table,
                "synced model registered"
            );
            by_table.entry(facts.table).or_default().push(facts);
        }
        Self { by_table }
    }

    /// The synced model of the table called `table` (compared without regard to ASCII case,
    /// as the databases compare unquoted names), for a connection whose registry handles the
    /// targets `handled`. A table with several models (two crates' models of one table, say)
    /// resolves to the one whose target the registry handles; `Err` with their names when that
    /// does not single one out.
    pub(crate) fn model(
        &self,
        table: &str,
        handled: &[TypeId],
    ) -> Result<Option<&ModelFacts>, Vec<&'static str>> {
        let models = match self.by_table.get(table) {
            Some(models) => models,
            None => match self
                .by_table
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(table))
            {
                Some((_, models)) => models,
                None => return Ok(None),
            },
        };
        if let [only] = models.as_slice() {
            return Ok(Some(only));
        }
        let mut served = models.iter().filter(|m| handled.contains(&m.target));
        match (served.next(), served.next()) {
            (Some(model), None) => Ok(Some(model)),
            _ => Err(models.iter().map(|m| m.model).collect()),
        }
    }

    /// The facts of target model `target` itself (not of a model that references it).
    pub(crate) fn target(&self, target: TypeId) -> Option<&ModelFacts> {
        self.models()
            .find(|facts| facts.target == target && facts.model == facts.target_name)
    }

    /// Every registered model.
    pub(crate) fn models(&self) -> impl Iterator<Item = &ModelFacts> {
        self.by_table.values().flatten()
    }
}
