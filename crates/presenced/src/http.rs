//! HTTP endpoints: `/health` (200 when ready, 503 with the reason otherwise) and
//! `/metrics` (Prometheus text format).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use presenced_cluster::ClusterNode;

#[derive(Clone)]
struct Ctx {
    node: Arc<ClusterNode>,
    metrics: PrometheusHandle,
}

pub fn router(node: Arc<ClusterNode>, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(render))
        .with_state(Ctx { node, metrics })
}

async fn health(State(c): State<Ctx>) -> impl IntoResponse {
    let st = c.node.local_status();
    let detail = format!(
        "node {} state {} term {} leader {} applied {} committed {}",
        c.node.id,
        st.state,
        st.term,
        if st.has_leader {
            st.current_leader.to_string()
        } else {
            "none".to_string()
        },
        c.node.applied_index(),
        c.node.committed_index()
    );
    match c.node.health() {
        Ok(()) => (StatusCode::OK, format!("ok: {detail}\n")),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {e}; {detail}\n"),
        ),
    }
}

async fn render(State(c): State<Ctx>) -> impl IntoResponse {
    c.metrics.run_upkeep();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        c.metrics.render(),
    )
}
