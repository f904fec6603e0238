//! Set-up shared by the fuzz targets that run real servers in-process.

/// Makes a panic on any thread (server tasks included) abort the process,
/// so libFuzzer sees it, and returns a runtime for the servers.
pub fn runtime_aborting_on_panic() -> tokio::runtime::Runtime {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::abort();
    }));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}
