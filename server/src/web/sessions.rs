//! Admin: the live FTP sessions (user, since when), as a page and as `/api/sessions`.

use askama::Template;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;

use super::auth::CurrentUser;
use super::error::WebError;
use super::{WebState, format};

#[derive(Serialize)]
pub struct SessionRow {
    pub id: String,
    pub user: String,
    pub since: String,
}

fn rows(state: &WebState) -> Vec<SessionRow> {
    state
        .ftp_sessions
        .list()
        .into_iter()
        .map(|s| SessionRow {
            id: s.id,
            user: s.user,
            since: format::system_rfc3339(s.since),
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
