//! Crash points for fault tests. Built only with the `failpoints` feature:
//! `FAILPOINTS="snapshot-install-before-load=return"` makes the process abort
//! (as a power cut would stop it) when it reaches that point. Without the
//! feature every crash point compiles to nothing.

/// Aborts the process if the named crash point is armed.
#[macro_export]
macro_rules! crash_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        {
            if fail::eval($name, |_| ()).is_some() {
                tracing::error!(point = $name, "crash point reached: aborting");
                std::process::abort();
            }
        }
    };
}

/// Arms the crash points listed in `FAILPOINTS` (`name=action;name=action`).
pub fn arm_from_env() {
    #[cfg(feature = "failpoints")]
    if let Ok(list) = std::env::var("FAILPOINTS") {
        for (name, action) in list.split(';').filter_map(|item| item.split_once('=')) {
            if let Err(e) = fail::cfg(name, action) {
                tracing::error!(point = name, cause = %e, "cannot arm crash point");
            }
        }
    }
}
