use clap::Parser;

fn main() {
    one_malloc_arena();
    let cli = caretaker::cli::Cli::parse();
    quiet_on_closed_pipe(&cli.command);
    match caretaker::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Rust ignores SIGPIPE, so `println!` to a closed pipe (`caretaker check ... | head -1`) panicked with "failed
/// printing to stdout: Broken pipe". The commands restore the default action and end quietly like other Unix
/// tools. Not the daemon: `run` must outlive a restarted log reader (journald), and sockets (MQTT, HTTP) never
/// raise SIGPIPE here (the standard library sends with MSG_NOSIGNAL).
fn quiet_on_closed_pipe(command: &caretaker::cli::Command) {
    #[cfg(unix)]
    if !matches!(command, caretaker::cli::Command::Run { .. }) {
        // SAFETY: called first thing in main, before any other thread exists; SIG_DFL is a valid action.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    #[cfg(not(unix))]
    let _ = command;
}

/// glibc gives each thread that allocates an arena of its own (up to 8 per core) so threads do not wait on one
/// lock; each arena keeps its own free memory. The daemon's threads (tokio workers, spool, stores) allocate little
/// at a time, so one arena costs no throughput (the 100 k backlog drain: 0.415-0.438 s with one arena vs
/// 0.419-0.425 s with eight) and saves ~0.6 MB of steady RSS at 10,000 points and ~1.5 MB of peak during the
/// drain (BENCHMARKS.md, issue 15). `MALLOC_ARENA_MAX` in the environment still decides when set.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called first thing in main, before any other thread exists; M_ARENA_MAX takes any positive value.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}
