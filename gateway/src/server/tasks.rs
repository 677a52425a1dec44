//! The tasks a starting process spawns.

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The tasks a starting process spawns, and the signal that stops them.
pub struct Tasks {
    /// Fires when the process stops.
    pub stop: watch::Receiver<bool>,
    /// The spawned tasks.
    pub handles: Vec<JoinHandle<()>>,
}

impl Tasks {
    /// Spawns `task` (it watches `stop` itself).
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.handles.push(tokio::spawn(task));
    }
}
