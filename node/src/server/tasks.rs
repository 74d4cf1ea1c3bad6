//! The background tasks of a running node, each kept by name, and stopped
//! in one written order: the reverse of the order they were started in, so
//! a task never outlives what it was started after.

use std::future::Future;

use tokio::task::JoinHandle;

/// How a task is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// It ends by itself once the node's `stopping` signal is sent (it may
    /// be in the middle of a step that should finish: a compaction's
    /// removal, a log purge): awaited.
    Signalled,
    /// It holds nothing that needs finishing (it watches and reports):
    /// aborted.
    Abort,
}

/// One running task.
struct Task {
    /// Says what the task does, in logs.
    name: &'static str,
    handle: JoinHandle<()>,
    stop: Stop,
}

/// The node's background tasks, in the order they were started.
#[derive(Default)]
pub struct Tasks {
    started: Vec<Task>,
}

impl Tasks {
    /// Starts `task` under `name`.
    pub fn spawn(
        &mut self,
        name: &'static str,
        stop: Stop,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        self.started.push(Task {
            name,
            handle: tokio::spawn(task),
            stop,
        });
    }

    /// Stops every task, the last started first. The `stopping` signal must
    /// have been sent already, or the [`Stop::Signalled`] ones never end.
    pub async fn stop(mut self) {
        while let Some(task) = self.started.pop() {
            if task.stop == Stop::Abort {
                task.handle.abort();
            }
            match task.handle.await {
                Ok(()) => {}
                Err(e) if e.is_cancelled() => {}
                Err(e) => tracing::warn!(task = task.name, cause = %e, "a background task failed"),
            }
            tracing::debug!(task = task.name, "stopped");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::Mutex;

    use super::*;

    #[tokio::test]
    async fn signalled_tasks_finish_their_step_and_watchers_are_aborted() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
        let mut tasks = Tasks::default();
        for name in ["first", "second"] {
            let (order, mut stopping) = (order.clone(), stopping.clone());
            tasks.spawn(name, Stop::Signalled, async move {
                let _ = stopping.wait_for(|stop| *stop).await;
                order.lock().unwrap().push(name);
            });
        }
        // Never ends by itself: `stop` returns only because it aborts it.
        tasks.spawn("watcher", Stop::Abort, std::future::pending());
        stopping_tx.send_replace(true);
        tasks.stop().await;
        let order = order.lock().unwrap().clone();
        assert_eq!(order.len(), 2, "both signalled tasks finished their step");
    }
}
