//! llama-server: the service-discovery server of llama (docs/server-api.md)
//! and its scraper into InfluxDB (docs/scraper.md).
//!
//! Agents register (`POST /api/v1/register`) into a [`registry::Store`],
//! fetch collector configs rendered per group ([`render`]), and are scraped
//! by the [`scraper`] into the in-memory [`history`] (and InfluxDB when one
//! is configured). [`matrix`] turns the history into the live matrix that
//! the API and the page at `/` ([`ui`]) show. The [`reaper`] removes
//! entries that stopped registering. The binary only parses flags and calls
//! [`server::serve`] or [`server::scrape`].

pub mod access;
pub mod budget;
pub mod clock;
pub mod entry;
pub mod error;
pub mod history;
pub mod influx;
pub mod listener;
pub mod matrix;
pub mod metrics;
pub mod reaper;
pub mod registration;
pub mod registry;
pub mod render;
pub mod routes;
pub mod scraper;
pub mod server;
pub mod settings;
pub mod state;
pub mod throttle;
pub mod tls;
pub mod ui;

pub use error::{ApiError, Error};
pub use routes::router;
pub use settings::Settings;
pub use state::AppState;
