//! Structured logs on stderr: human-readable by default, JSON lines with
//! `VIGIL_LOG_FORMAT=json`; the level from `VIGIL_LOG` (e.g. `info`, `vigil_monitor=debug`).

pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIGIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let json = std::env::var("VIGIL_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // A second init (tests calling run twice) fails harmlessly.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
