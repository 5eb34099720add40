//! The web console's routes (`/` and its assets). Owned by the console's own work; the API server merges
//! these routes at the root of the `[http]` listener.

use crate::api::ApiState;

/// The console's routes (none yet).
pub fn routes() -> axum::Router<ApiState> {
    axum::Router::new()
}
