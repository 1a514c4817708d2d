//! The sync handler: sends a store's batch to the marketplace and maps its answers to
//! retry, do-not-retry and retry-after.

use std::time::Duration;

use diesel_sync::{Batch, Handler, HandlerError};
use reqwest::StatusCode;

use crate::marketplace::Price;
use crate::shop::Product;

/// Pushes prices to the marketplace. Which stores sync is the registry's filter's business
/// (`when`), read from each batch's store row.
#[derive(Clone)]
pub(crate) struct MarketplaceClient {
    http: reqwest::Client,
    base: String,
}

impl MarketplaceClient {
    pub(crate) fn new(base: String) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client");
        Self { http, base }
    }
}

impl Handler<Product> for MarketplaceClient {
    async fn handle(&self, batch: Batch<Product>) -> Result<(), HandlerError> {
        let store = *batch.store();
        // A product deleted in the shop is taken off the marketplace. Unlisting is idempotent,
        // so a retry of the whole batch may repeat it.
        if !batch.removed().is_empty() {
            let response = self
                .http
                .post(format!("{}/stores/{store}/unlist", self.base))
                .json(batch.removed())
                .send()
                .await?;
            if !response.status().is_success() {
                return Err(HandlerError::retryable(format!(
                    "store {store}: unlisting answered {}",
                    response.status()
                )));
            }
        }
        if batch.rows().is_empty() {
            return Ok(());
        }
        let prices: Vec<Price> = batch
            .rows()
            .iter()
            .map(|p| Price {
                id: p.id,
                price_cents: p.price_cents,
            })
            .collect();
        let response = self
            .http
            .post(format!("{}/stores/{store}/prices", self.base))
            .json(&prices)
            .send()
            .await?;
        let status = response.status();
        match status {
            s if s.is_success() => Ok(()),
            StatusCode::TOO_MANY_REQUESTS => {
                let wait = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .map_or(Duration::from_secs(1), Duration::from_secs);
                Err(HandlerError::retry_after(
                    format!("store {store}: rate limited"),
                    wait,
                ))
            }
            s if s.is_client_error() => Err(HandlerError::permanent(format!(
                "store {store}: marketplace rejected the batch ({s})"
            ))),
            s => Err(HandlerError::retryable(format!(
                "store {store}: marketplace answered {s}"
            ))),
        }
    }
}
