//! Admin: the alerts. `GET /admin/alerts` (HTML, server-rendered) and `GET /api/alerts`
//! (JSON) list the open incidents, oldest first, and the recently cleared ones, newest
//! first; the navigation shows the number open. Admins only, with the web UI's logins.

use askama::Template;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;

use super::Incident;
use crate::web::WebState;
use crate::web::auth::CurrentUser;
use crate::web::error::WebError;
use crate::web::format;

#[derive(Debug, Serialize)]
pub struct AlertsReport {
    pub open: Vec<Incident>,
    pub recently_cleared: Vec<Incident>,
    /// Whether notifications are sent, and where (no addresses: they may carry secrets).
    pub webhook: bool,
    pub email: bool,
}

fn report(state: &WebState) -> AlertsReport {
    AlertsReport {
        open: state.alerts.open(),
        recently_cleared: state.alerts.recently_cleared(),
        webhook: state.alerts_config.webhook.is_some(),
        email: state.alerts_config.email.is_some(),
    }
}

/// `GET /api/alerts`.
pub async fn api(
    State(state): State<WebState>,
    user: CurrentUser,
) -> Result<axum::Json<AlertsReport>, WebError> {
    user.require_admin()?;
    Ok(axum::Json(report(&state)))
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsPage<'a> {
    user: &'a CurrentUser,
    report: AlertsReport,
    interval: String,
}

fn when(time: &time::OffsetDateTime) -> String {
    format::rfc3339(*time)
}

fn cleared(incident: &Incident) -> String {
    incident.cleared_at.map(format::rfc3339).unwrap_or_default()
}

/// `GET /admin/alerts`.
pub async fn page(State(state): State<WebState>, user: CurrentUser) -> Result<Response, WebError> {
    user.require_admin()?;
    let page = AlertsPage {
        user: &user,
        report: report(&state),
        interval: humantime::format_duration(state.alerts_config.interval.0).to_string(),
    };
    Ok(Html(page.render()?).into_response())
}
