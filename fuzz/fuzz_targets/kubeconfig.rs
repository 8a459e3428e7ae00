//! Kubeconfig files as the agent reads them (`agent::client`): `Kubeconfig::from_yaml` (what
//! `read_from` does after reading the file), then `kube::Config::from_custom_kubeconfig` and the
//! client built from it, which decode the CA bundle and the client certificate and key. Paths to
//! files and exec/auth-provider plugins are dropped first: the fuzzer must not read files or run
//! programs.
#![no_main]

use std::sync::LazyLock;

use kube::config::{KubeConfigOptions, Kubeconfig};
use libfuzzer_sys::fuzz_target;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
});

fn without_files_or_plugins(mut kc: Kubeconfig) -> Kubeconfig {
    for cluster in kc.clusters.iter_mut().filter_map(|c| c.cluster.as_mut()) {
        cluster.certificate_authority = None;
        cluster.proxy_url = None;
    }
    for user in kc
        .auth_infos
        .iter_mut()
        .filter_map(|u| u.auth_info.as_mut())
    {
        user.client_certificate = None;
        user.client_key = None;
        user.token_file = None;
        user.exec = None;
        user.auth_provider = None;
    }
    kc
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(kc) = Kubeconfig::from_yaml(text) else {
        return;
    };
    let kc = without_files_or_plugins(kc);
    RUNTIME.block_on(async move {
        if let Ok(cfg) =
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await
        {
            drop(kube::Client::try_from(cfg));
            // The client spawned its request buffer's task; let it see the client gone and end,
            // or every input would leave one behind.
            tokio::task::yield_now().await;
        }
    });
});
