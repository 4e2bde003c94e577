//! Admin: the live FTP sessions (user, client address, since when, the transfer running
//! now with its bytes so far and rate), as a page and as `/api/sessions`, read from the
//! FTP service's one registry ([`crate::ftp::sessions`]).

use askama::Template;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;

use super::auth::CurrentUser;
use super::error::WebError;
use super::{WebState, format};
use crate::ftp::throttle::Direction;

#[derive(Serialize)]
pub struct SessionRow {
    pub id: String,
    pub user: String,
    pub address: Option<String>,
    pub since: String,
    pub transfer: Option<TransferRow>,
}

#[derive(Serialize)]
pub struct TransferRow {
    pub path: String,
    /// "upload" or "download".
    pub direction: &'static str,
    pub bytes: u64,
    /// Average bytes per second since the transfer began.
    pub rate: u64,
}

impl SessionRow {
    fn address_text(&self) -> &str {
        self.address.as_deref().unwrap_or("")
    }
}

impl TransferRow {
    fn bytes_text(&self) -> String {
        format::size(self.bytes)
    }
    fn rate_text(&self) -> String {
        format!("{}/s", format::size(self.rate))
    }
}

fn rows(state: &WebState) -> Vec<SessionRow> {
    state
        .ftp_sessions
        .list()
        .into_iter()
        .map(|s| SessionRow {
            id: s.id.to_string(),
            user: s.user,
            address: s.address.map(|a| a.to_string()),
            since: format::system_rfc3339(s.since),
            transfer: s.transfer.map(|t| TransferRow {
                path: t.path,
                direction: match t.direction {
                    Direction::Upload => "upload",
                    Direction::Download => "download",
                },
                bytes: t.bytes,
                rate: t.rate,
            }),
        })
        .collect()
}

pub async fn api_sessions(
    State(state): State<WebState>,
    user: CurrentUser,
) -> Result<axum::Json<Vec<SessionRow>>, WebError> {
    user.require_admin()?;
    Ok(axum::Json(rows(&state)))
}

#[derive(Template)]
#[template(path = "sessions.html")]
struct SessionsPage<'a> {
    user: &'a CurrentUser,
    sessions: Vec<SessionRow>,
    web_sessions: usize,
}

pub async fn page(State(state): State<WebState>, user: CurrentUser) -> Result<Response, WebError> {
    user.require_admin()?;
    let page = SessionsPage {
        user: &user,
        sessions: rows(&state),
        web_sessions: state.logins.session_count(),
    };
    Ok(Html(page.render()?).into_response())
}
