//! A marketplace on loopback: one bulk price endpoint per store that rate-limits and fails a
//! configurable fraction of requests, and remembers everything it accepted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// One price in a bulk update.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Price {
    pub(crate) id: i64,
    pub(crate) price_cents: i64,
}

/// How unreliable the marketplace is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Behaviour {
    /// Fraction of requests answered `503` (0.0–1.0).
    pub(crate) failure_rate: f64,
    /// Requests a store may make per second before it gets `429`.
    pub(crate) requests_per_second: u32,
}

/// What the marketplace saw and holds.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// The listed price of each product.
    pub(crate) prices: HashMap<i64, i64>,
    /// Every price ever accepted, in order.
    pub(crate) accepted: Vec<(i64, Price)>,
    /// Accepted bulk updates per store.
    pub(crate) calls: HashMap<i64, u64>,
    /// Products taken off the marketplace, by store.
    pub(crate) unlisted: HashMap<i64, i64>,
    /// Requests answered with an error (503 or 429).
    pub(crate) refused: u64,
    /// Requests rejected for the rate limit.
    pub(crate) throttled: u64,
}

struct Shared {
    behaviour: Behaviour,
    ledger: Mutex<Ledger>,
    windows: Mutex<HashMap<i64, (Instant, u32)>>,
    random: Mutex<u64>,
}

/// A running marketplace.
pub(crate) struct Marketplace {
    pub(crate) address: SocketAddr,
    shared: Arc<Shared>,
}

impl Marketplace {
    /// Starts the server on an ephemeral port of 127.0.0.1.
    pub(crate) async fn start(behaviour: Behaviour) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            behaviour,
            ledger: Mutex::default(),
            windows: Mutex::default(),
            random: Mutex::new(0x5EED),
        });
        let app = Router::new()
            .route("/stores/{store}/prices", post(bulk_update))
            .route("/stores/{store}/unlist", post(unlist))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { address, shared })
    }

    /// Reads the ledger.
    pub(crate) fn ledger<R>(&self, read: impl FnOnce(&Ledger) -> R) -> R {
        read(&self.shared.ledger.lock().unwrap())
    }
}

async fn bulk_update(
    State(shared): State<Arc<Shared>>,
    Path(store): Path<i64>,
    Json(prices): Json<Vec<Price>>,
) -> (StatusCode, HeaderMap) {
    let mut headers = HeaderMap::new();
    if !shared.admit(store) {
        let mut ledger = shared.ledger.lock().unwrap();
        ledger.refused += 1;
        ledger.throttled += 1;
        headers.insert("retry-after", HeaderValue::from_static("1"));
        return (StatusCode::TOO_MANY_REQUESTS, headers);
    }
    if shared.coin() < shared.behaviour.failure_rate {
        shared.ledger.lock().unwrap().refused += 1;
        return (StatusCode::SERVICE_UNAVAILABLE, headers);
    }
    if prices.iter().any(|p| p.price_cents < 0) {
        return (StatusCode::UNPROCESSABLE_ENTITY, headers);
    }
    let mut ledger = shared.ledger.lock().unwrap();
    for price in prices {
        ledger.prices.insert(price.id, price.price_cents);
        ledger.accepted.push((store, price));
    }
    *ledger.calls.entry(store).or_default() += 1;
    (StatusCode::NO_CONTENT, headers)
}

/// Takes products off the marketplace: they are no longer for sale.
async fn unlist(
    State(shared): State<Arc<Shared>>,
    Path(store): Path<i64>,
    Json(ids): Json<Vec<i64>>,
) -> StatusCode {
    if shared.coin() < shared.behaviour.failure_rate {
        shared.ledger.lock().unwrap().refused += 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let mut ledger = shared.ledger.lock().unwrap();
    for id in ids {
        ledger.prices.remove(&id);
        ledger.unlisted.insert(id, store);
    }
    StatusCode::NO_CONTENT
}

impl Shared {
    /// A fixed one-second window per store.
    fn admit(&self, store: i64) -> bool {
        let mut windows = self.windows.lock().unwrap();
        let now = Instant::now();
        let window = windows.entry(store).or_insert((now, 0));
        if now.duration_since(window.0) >= Duration::from_secs(1) {
            *window = (now, 0);
        }
        window.1 += 1;
        window.1 <= self.behaviour.requests_per_second
    }

    /// A uniform draw in [0, 1), from splitmix64.
    fn coin(&self) -> f64 {
        let mut state = self.random.lock().unwrap();
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        #[allow(clippy::cast_precision_loss)]
        let draw = (z ^ (z >> 31)) as f64 / u64::MAX as f64;
        draw
    }
}
