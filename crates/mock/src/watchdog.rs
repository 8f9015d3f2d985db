//! [`watchdog`]: a deadlock fails the test instead of hanging the run.

use std::sync::mpsc;
use std::time::Duration;

/// Runs `f` on a thread of its own and returns its result; if it has not
/// finished after `limit`, prints `name` and ends the whole test process with
/// a failure (a thread spinning on a lock cannot be stopped, and waiting for
/// it would hang the test run). A panic in `f` is passed on.
pub fn watchdog<R: Send>(name: &str, limit: Duration, f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel::<()>();
        let worker = s.spawn(move || {
            let r = f();
            let _ = tx.send(());
            r
        });
        match rx.recv_timeout(limit) {
            // Finished, or panicked (the sender was dropped): join tells which.
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
                Ok(r) => r,
                Err(p) => std::panic::resume_unwind(p),
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {
                eprintln!("kmm-mock watchdog: `{name}` did not finish in {limit:?} (deadlock?)");
                std::process::exit(101);
            }
        }
    })
}
