//! Admin: users.toml from the browser and `/api/users`. Every change goes through
//! [`UsersDocument`] (comments kept, checked by the server's own loader, written
//! atomically) and the live [`UserStore`](crate::users::UserStore) is reloaded at once, so
//! FTP applies it to the user's next command. An admin cannot lock itself out (remove
//! itself, or take away its own `admin` or `enabled`).

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use logarchive_common::config::server::UserName;
use logarchive_common::paths::ArchivePath;
use logarchive_common::perm::{Perm, PermSet};
use logarchive_common::rate::Rate;
use serde::{Deserialize, Serialize};

use super::auth::CurrentUser;
use super::error::WebError;
use super::{Form, Json, WebState, url_encode};
use crate::users::edit::{EditError, UserChanges, UsersDocument};
use crate::users::{Account, hash_password};

/// Shortest password accepted (as `user passwd`).
const MIN_PASSWORD: usize = 8;

/// A user as the API shows it (never the password hash).
#[derive(Serialize)]
pub struct UserView {
    pub name: String,
    pub home: String,
    pub perm: String,
    pub dirs: BTreeMap<String, String>,
    pub max_upload_rate: Option<String>,
    pub max_download_rate: Option<String>,
    pub enabled: bool,
    pub admin: bool,
}

impl UserView {
    fn of(account: &Account) -> UserView {
        UserView {
            name: account.name.clone(),
            home: account.home.to_string(),
            perm: account.perm.to_string(),
            dirs: account
                .dirs
                .iter()
                .map(|(d, p)| (d.to_string(), p.to_string()))
                .collect(),
            max_upload_rate: account.max_upload_rate.map(|r| r.to_string()),
            max_download_rate: account.max_download_rate.map(|r| r.to_string()),
            enabled: account.enabled,
            admin: account.admin,
        }
    }
    fn url(&self) -> String {
        format!("/admin/users/{}", url_encode(&self.name))
    }
    fn dirs_text(&self) -> String {
        self.dirs
            .iter()
            .map(|(d, p)| format!("{d}={p}\n"))
            .collect()
    }
}

/// A requested change, from a form or JSON; `None` leaves a value as it is.
#[derive(Default)]
struct Edit {
    password: Option<String>,
    home: Option<String>,
    perm: Option<String>,
    max_upload_rate: Option<String>,
    max_download_rate: Option<String>,
    enabled: Option<bool>,
    admin: Option<bool>,
    dirs: Option<Vec<(String, String)>>,
}

impl Edit {
    /// Checks every value and turns it into the changes `UsersDocument` applies.
    async fn changes(&self, existing: Option<&Account>) -> Result<UserChanges, WebError> {
        let mut changes = UserChanges::default();
        if let Some(perm) = self.perm.as_deref() {
            changes.perm = Some(parse_perm(perm)?);
        }
        if let Some(home) = self.home.as_deref().filter(|h| !h.trim().is_empty()) {
            changes.home = Some(ArchivePath::parse(home.trim())?);
        }
        let rate = |value: &str, key: &str| -> Result<Rate, WebError> {
            value
                .trim()
                .parse::<Rate>()
                .map_err(|err| WebError::BadRequest(format!("{key}: {err}")))
        };
        if let Some(r) = self
            .max_upload_rate
            .as_deref()
            .filter(|r| !r.trim().is_empty())
        {
            changes.max_upload_rate = Some(rate(r, "max_upload_rate")?);
        }
        if let Some(r) = self
            .max_download_rate
            .as_deref()
            .filter(|r| !r.trim().is_empty())
        {
            changes.max_download_rate = Some(rate(r, "max_download_rate")?);
        }
        changes.enabled = self.enabled;
        changes.admin = self.admin;
        if let Some(dirs) = &self.dirs {
            for (folder, letters) in dirs {
                let folder = ArchivePath::parse(folder.trim())?;
                changes.set_dirs.push((folder, parse_perm(letters)?));
            }
            if let Some(account) = existing {
                for (folder, _) in &account.dirs {
                    if !changes.set_dirs.iter().any(|(f, _)| f == folder) {
                        changes.remove_dirs.push(folder.clone());
                    }
                }
            }
        }
        if let Some(password) = self.password.as_deref().filter(|p| !p.is_empty()) {
            if password.chars().count() < MIN_PASSWORD {
                return Err(WebError::BadRequest(format!(
                    "the password must have at least {MIN_PASSWORD} characters"
                )));
            }
            let password = password.to_owned();
            let hash = tokio::task::spawn_blocking(move || hash_password(&password))
                .await
                .map_err(|e| WebError::Internal(e.to_string()))?
                .map_err(|e| WebError::Internal(format!("cannot hash the password: {e}")))?;
            changes.password_hash = Some(hash);
        }
        Ok(changes)
    }
}

fn parse_perm(letters: &str) -> Result<PermSet, WebError> {
    letters.trim().parse::<PermSet>().map_err(|err| {
        WebError::BadRequest(format!("permission string \"{}\": {err}", letters.trim()))
    })
}

/// "FOLDER=LETTERS" per line.
fn parse_dirs(text: &str) -> Result<Vec<(String, String)>, WebError> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|line| {
            line.rsplit_once('=')
                .map(|(d, p)| (d.trim().to_owned(), p.trim().to_owned()))
                .ok_or_else(|| {
                    WebError::BadRequest(format!(
                        "per-folder line \"{line}\" is not FOLDER=LETTERS"
                    ))
                })
        })
        .collect()
}

enum Change {
    Add(UserName, UserChanges),
    Set(String, UserChanges),
    Remove(String),
}

/// Applies one change to users.toml and makes the server use it now.
async fn apply(state: &WebState, change: Change) -> Result<(), WebError> {
    let file = state.users_file.clone();
    let users = state.users.clone();
    tokio::task::spawn_blocking(move || {
        let mut doc = UsersDocument::open(&file)?;
        match &change {
            Change::Add(name, changes) => doc.add(name, changes)?,
            Change::Set(name, changes) => doc.set(name, changes)?,
            Change::Remove(name) => doc.remove(name)?,
        }
        doc.save()?;
        users.reload_if_changed();
        Ok::<_, EditError>(())
    })
    .await
    .map_err(|e| WebError::Internal(e.to_string()))?
    .map_err(|err| match err {
        EditError::Exists(_) => WebError::Conflict(err.to_string()),
        EditError::Missing(_) => WebError::NotFound(err.to_string()),
        EditError::Invalid(_) => WebError::BadRequest(err.to_string()),
        other => WebError::Internal(other.to_string()),
    })
}

/// Refuses edits that would lock the acting admin out.
fn guard_self(user: &CurrentUser, name: &str, edit: &Edit) -> Result<(), WebError> {
    if user.account.name == name && (edit.admin == Some(false) || edit.enabled == Some(false)) {
        return Err(WebError::BadRequest(
            "you cannot remove your own admin right or disable yourself".into(),
        ));
    }
    Ok(())
}

fn existing(state: &WebState, name: &str) -> Result<std::sync::Arc<Account>, WebError> {
    state
        .users
        .get(name)
        .ok_or_else(|| WebError::NotFound(format!("no user \"{name}\"")))
}

fn user_name(name: &str) -> Result<UserName, WebError> {
    name.trim()
        .parse::<UserName>()
        .map_err(|err| WebError::BadRequest(format!("user name: {err}")))
}

// ---- API ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserJson {
    name: Option<String>,
    password: Option<String>,
    home: Option<String>,
    perm: Option<String>,
    max_upload_rate: Option<String>,
    max_download_rate: Option<String>,
    enabled: Option<bool>,
    admin: Option<bool>,
    dirs: Option<BTreeMap<String, String>>,
}

impl UserJson {
    fn edit(self) -> Edit {
        Edit {
            password: self.password,
            home: self.home,
            perm: self.perm,
            max_upload_rate: self.max_upload_rate,
            max_download_rate: self.max_download_rate,
            enabled: self.enabled,
            admin: self.admin,
            dirs: self.dirs.map(|d| d.into_iter().collect()),
        }
    }
}

pub async fn api_list(
    State(state): State<WebState>,
    user: CurrentUser,
) -> Result<axum::Json<Vec<UserView>>, WebError> {
    user.require_admin()?;
    Ok(axum::Json(
        state
            .users
            .current()
            .all()
            .iter()
            .map(|a| UserView::of(a))
            .collect(),
    ))
}

pub async fn api_get(
    State(state): State<WebState>,
    user: CurrentUser,
    Path(name): Path<String>,
) -> Result<axum::Json<UserView>, WebError> {
    user.require_admin()?;
    Ok(axum::Json(UserView::of(&*existing(&state, &name)?)))
}

pub async fn api_add(
    State(state): State<WebState>,
    user: CurrentUser,
    Json(body): Json<UserJson>,
) -> Result<Response, WebError> {
    user.require_admin()?;
    let name = user_name(body.name.as_deref().unwrap_or(""))?;
    if body.password.as_deref().unwrap_or("").is_empty() {
        return Err(WebError::BadRequest("a new user needs a password".into()));
    }
    let changes = body.edit().changes(None).await?;
    apply(&state, Change::Add(name.clone(), changes)).await?;
    let view = UserView::of(&*existing(&state, name.as_str())?);
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

pub async fn api_set(
    State(state): State<WebState>,
    user: CurrentUser,
    Path(name): Path<String>,
    Json(body): Json<UserJson>,
) -> Result<axum::Json<UserView>, WebError> {
    user.require_admin()?;
    let account = existing(&state, &name)?;
    if body.name.as_deref().is_some_and(|n| n != name) {
        return Err(WebError::BadRequest(
            "a user cannot be renamed; add a new one".into(),
        ));
    }
    let edit = body.edit();
    guard_self(&user, &name, &edit)?;
    let changes = edit.changes(Some(&account)).await?;
    apply(&state, Change::Set(name.clone(), changes)).await?;
    Ok(axum::Json(UserView::of(&*existing(&state, &name)?)))
}

pub async fn api_remove(
    State(state): State<WebState>,
    user: CurrentUser,
    Path(name): Path<String>,
) -> Result<StatusCode, WebError> {
    user.require_admin()?;
    if user.account.name == name {
        return Err(WebError::BadRequest("you cannot remove yourself".into()));
    }
    existing(&state, &name)?;
    apply(&state, Change::Remove(name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- pages ----

/// One letter with what it allows, for the live explanation.
pub struct LetterRow {
    pub letter: char,
    pub meaning: &'static str,
    pub commands: String,
    pub granted: bool,
}

fn letters(perm: &str) -> Vec<LetterRow> {
    Perm::ALL
        .into_iter()
        .map(|p| LetterRow {
            letter: p.letter(),
            meaning: p.meaning(),
            commands: p.commands().join(", "),
            granted: perm.contains(p.letter()),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage<'a> {
    user: &'a CurrentUser,
    users: Vec<UserView>,
    letters: Vec<LetterRow>,
}

#[derive(Template)]
#[template(path = "user_edit.html")]
struct EditPage<'a> {
    user: &'a CurrentUser,
    edited: UserView,
    letters: Vec<LetterRow>,
    saved: bool,
}

pub async fn page_list(
    State(state): State<WebState>,
    user: CurrentUser,
) -> Result<Response, WebError> {
    user.require_admin()?;
    let page = UsersPage {
        user: &user,
        users: state
            .users
            .current()
            .all()
            .iter()
            .map(|a| UserView::of(a))
            .collect(),
        letters: letters("elr"),
    };
    Ok(Html(page.render()?).into_response())
}

#[derive(Deserialize, Default)]
pub struct EditQuery {
    saved: Option<u8>,
}

pub async fn page_edit(
    State(state): State<WebState>,
    user: CurrentUser,
    Path(name): Path<String>,
    super::Params(query): super::Params<EditQuery>,
) -> Result<Response, WebError> {
    user.require_admin()?;
    let edited = UserView::of(&*existing(&state, &name)?);
    let page = EditPage {
        user: &user,
        letters: letters(&edited.perm),
        edited,
        saved: query.saved.is_some(),
    };
    Ok(Html(page.render()?).into_response())
}

#[derive(Deserialize)]
pub struct UserForm {
    csrf: String,
    name: Option<String>,
    password: Option<String>,
    home: Option<String>,
    perm: Option<String>,
    max_upload_rate: Option<String>,
    max_download_rate: Option<String>,
    /// Checkboxes: present when ticked.
    enabled: Option<String>,
    admin: Option<String>,
    dirs: Option<String>,
}

impl UserForm {
    fn edit(&self) -> Result<Edit, WebError> {
        Ok(Edit {
            password: self.password.clone(),
            home: self.home.clone(),
            perm: self.perm.clone(),
            max_upload_rate: self.max_upload_rate.clone(),
            max_download_rate: self.max_download_rate.clone(),
            enabled: Some(self.enabled.is_some()),
            admin: Some(self.admin.is_some()),
            dirs: self.dirs.as_deref().map(parse_dirs).transpose()?,
        })
    }
}

pub async fn page_add(
    State(state): State<WebState>,
    user: CurrentUser,
    Form(form): Form<UserForm>,
) -> Result<Response, WebError> {
    user.require_admin()?;
    user.check_csrf(Some(&form.csrf))?;
    let name = user_name(form.name.as_deref().unwrap_or(""))?;
    if form.password.as_deref().unwrap_or("").is_empty() {
        return Err(WebError::BadRequest("a new user needs a password".into()));
    }
    let changes = form.edit()?.changes(None).await?;
    apply(&state, Change::Add(name.clone(), changes)).await?;
    Ok(Redirect::to(&format!(
        "/admin/users/{}?saved=1",
        url_encode(name.as_str())
    ))
    .into_response())
}

pub async fn page_save(
    State(state): State<WebState>,
    user: CurrentUser,
    Path(name): Path<String>,
    Form(form): Form<UserForm>,
) -> Result<Response, WebError> {
    user.require_admin()?;
    user.check_csrf(Some(&form.csrf))?;
    let account = existing(&state, &name)?;
    let edit = form.edit()?;
    guard_self(&user, &name, &edit)?;
    let changes = edit.changes(Some(&account)).await?;
    apply(&state, Change::Set(name.clone(), changes)).await?;
    Ok(Redirect::to(&format!("/admin/users/{}?saved=1", url_encode(&name))).into_response())
}
