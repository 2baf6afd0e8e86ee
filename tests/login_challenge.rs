//! Anonymous requests that credentials could allow are challenged (401) rather than refused
//! (issue 12), so real containerd and skopeo can log in.

#![allow(clippy::unwrap_used)] // a test may unwrap: a panic is its failure

mod common;

use common::containerd::start_containerd;
use common::image;
use common::*;

fn basic(user: &str, pw: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}")))
}

fn skopeo_status(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("skopeo").arg("--insecure-policy").args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_requests_are_challenged_so_containerd_and_skopeo_can_log_in() {
    let uid = std::process::Command::new("id").arg("-u").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&uid.stdout).trim(), "0", "containerd tests run as root (as CI does)");
    let registry = Registry::start(None).await;
    let src = tempfile::tempdir().unwrap();
    let app = image::manifest(src.path(), 23, &[30_000], "amd64");
    image::finish_layout(src.path(), &[(&app.top, "v1")]);
    for name in ["public/app:v1", "team/app:v1", "other/app:v1"] {
        push(src.path(), "v1", &registry.addr.to_string(), name, None);
    }
    let access = format!(
        "[access]\nanonymous = true\nanonymous_allow = [\"lab.test/public/*\"]\n[[access.user]]\nname = \"alice\"\npassword_bcrypt = \"{}\"\nallow = [\"lab.test/public/*\", \"lab.test/team/*\"]\n",
        bcrypt::hash("s3cret", 4).unwrap()
    );
    let proxy = Proxy::start(&format!(
        "{access}\n{}",
        upstream_toml("lab.test", &registry.url(), "prefix = \"lab\"\ndefault = true")
    ))
    .await;
    let p = proxy.url();

    // Without credentials, outside anonymous_allow: 401 with a Basic challenge, and /v2/
    // challenges too (skopeo and podman decide there whether to send credentials).
    for path in ["/v2/lab/team/app/manifests/v1", "/v2/"] {
        let r = get(&format!("{p}{path}"), &[]).await.unwrap();
        assert_eq!((r.status, r.error_code().as_deref()), (401, Some("UNAUTHORIZED")), "{path}");
        assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"pullthrough\""), "{path}");
    }
    // Wrong password: 401. A user outside their rules: 403, no challenge.
    let r = get(&format!("{p}/v2/lab/team/app/manifests/v1"), &[("authorization", &basic("alice", "nope"))]).await;
    assert_eq!(r.unwrap().status, 401);
    let r = get(&format!("{p}/v2/lab/other/app/manifests/v1"), &[("authorization", &basic("alice", "s3cret"))])
        .await
        .unwrap();
    assert_eq!((r.status, r.error_code().as_deref()), (403, Some("DENIED")));
    assert_eq!(r.header("www-authenticate"), None);

    // skopeo: anonymous inside the allow-list still works (it answers the /v2/ challenge
    // with empty credentials); with credentials, the user's repositories too.
    let out = tempfile::tempdir().unwrap();
    let dest = |n: &str| format!("oci:{}:{n}", out.path().display());
    let from = |repo: &str| format!("docker://{}/lab/{repo}/app:v1", proxy.addr);
    let (ok, log) = skopeo_status(&["copy", "--src-tls-verify=false", &from("public"), &dest("anon")]);
    assert!(ok, "anonymous skopeo pull of an allowed repository failed:\n{log}");
    let (ok, log) = skopeo_status(&["copy", "--src-tls-verify=false", &from("team"), &dest("anon2")]);
    assert!(!ok && (log.contains("401") || log.to_lowercase().contains("unauthorized")), "{log}");
    let creds = ["--src-creds", "alice:s3cret"];
    let (ok, log) =
        skopeo_status(&[&["copy", "--src-tls-verify=false"][..], &creds, &[&from("team"), &dest("alice")]].concat());
    assert!(ok, "skopeo with credentials could not pull alice's repository:\n{log}");
    let (ok, log) = skopeo_status(
        &[&["copy", "--src-tls-verify=false", "--src-creds", "alice:nope"][..], &[&from("team"), &dest("wrong")]]
            .concat(),
    );
    assert!(!ok, "a wrong password pulled:\n{log}");
    let (ok, _) =
        skopeo_status(&[&["copy", "--src-tls-verify=false"][..], &creds, &[&from("other"), &dest("other")]].concat());
    assert!(!ok, "alice pulled a repository outside her rules");

    // containerd sends credentials only after a challenge: `ctr --user` now works. The
    // proxy is lab.test's only host, so a refusal cannot fall back to the registry.
    let work = tempfile::tempdir().unwrap();
    let hosts = work.path().join("certs.d");
    std::fs::create_dir_all(hosts.join("lab.test")).unwrap();
    let hosts_toml = format!("server = \"{p}\"\n[host.\"{p}\"]\n  capabilities = [\"pull\", \"resolve\"]\n");
    std::fs::write(hosts.join("lab.test/hosts.toml"), hosts_toml).unwrap();
    let ctrd = start_containerd(&work.path().join("ctrd")).await;
    let pull = |image: &str, user: Option<&str>| {
        let mut args = vec!["images", "pull", "--hosts-dir", hosts.to_str().unwrap(), "--snapshotter", "native"];
        if let Some(u) = user {
            args.extend(["--user", u]);
        }
        args.push(image);
        let out = ctrd.ctr(&args);
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, err) = pull("lab.test/team/app:v1", Some("alice:s3cret"));
    assert!(ok, "ctr --user could not pull:\n{err}\n{}", proxy.proc.log_text());
    let bytes = ctrd.ctr(&["content", "get", &app.layers[0].digest]).stdout;
    assert_eq!(format!("sha256:{}", sha256_hex(&bytes)), app.layers[0].digest);
    let (ok, err) = pull("lab.test/other/app:v1", Some("alice:s3cret"));
    assert!(!ok && err.contains("403"), "{err}");
    let (ok, err) = pull("lab.test/team/app:v2", None);
    assert!(!ok && err.contains("401"), "{err}");
}
