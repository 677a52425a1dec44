//! A resource's router that remembers the paths it routes, so that a test can compare
//! them with the resource's part of the OpenAPI document.

use axum::Router;
use axum::routing::MethodRouter;

use super::state::AppState;

/// A resource's routes.
#[derive(Default)]
pub struct Routes {
    router: Router<AppState>,
    paths: Vec<&'static str>,
}

impl Routes {
    /// No routes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes `path` to `methods`.
    pub fn route(mut self, path: &'static str, methods: MethodRouter<AppState>) -> Self {
        self.router = self.router.route(path, methods);
        self.paths.push(path);
        self
    }

    /// The routed paths, in the order they were added.
    pub fn paths(&self) -> &[&'static str] {
        &self.paths
    }
}

impl From<Routes> for Router<AppState> {
    fn from(routes: Routes) -> Self {
        routes.router
    }
}
