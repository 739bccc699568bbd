//! The build manager against a real store: packages go pending → running → succeeded/failed,
//! deployments land in the archive store, functions are re-pinned only on success.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fission_builder::{BuildManager, Config};
use fission_core::resources::{
    Archive, Builder, Environment, EnvironmentSpec, Function, FunctionSpec, Package, PackageSpec,
    Runtime,
};
use fission_core::{AnyResource, ObjectReference, ResourceKind, ResourceStore};
use fission_store::RedbStore;
use fission_store::archive::{ArchiveStore, archive_id_from_url};
use fission_store::logs::LogStore;
use fission_test_support::{binary_on_path, require};
use tokio_util::sync::CancellationToken;

struct Harness {
    store: Arc<dyn ResourceStore>,
    archives: ArchiveStore,
    logs: LogStore,
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn ResourceStore> =
            Arc::new(RedbStore::open(&dir.path().join("db.redb")).expect("store"));
        let archives = ArchiveStore::open(dir.path().join("archives")).expect("archives");
        let logs = LogStore::open(dir.path().join("logs")).expect("logs");
        Self {
            store,
            archives,
            logs,
            dir,
            shutdown: CancellationToken::new(),
            task: None,
        }
    }

    fn config(&self) -> Config {
        Config::new(self.dir.path().join("builds"))
    }

    fn start(&mut self) {
        let config = self.config();
        self.start_with(config);
    }

    fn start_with(&mut self, config: Config) {
        let m = BuildManager::new(
            config,
            self.store.clone(),
            self.archives.clone(),
            self.logs.clone(),
        );
        let shutdown = self.shutdown.clone();
        self.task = Some(tokio::spawn(async move {
            m.run(shutdown).await.expect("build manager")
        }));
    }

    async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("stops in time")
                .expect("join");
        }
        self.shutdown = CancellationToken::new();
    }

    async fn env(&self, name: &str, builder_image: &str, builder_command: &str) {
        let builder = (!builder_image.is_empty()).then(|| Builder {
            image: builder_image.to_owned(),
            command: builder_command.to_owned(),
            ..Builder::default()
        });
        let runtime_image = if builder_image.contains("node") {
            "fission/node-env"
        } else {
            "fission/python-env"
        };
        let spec = EnvironmentSpec {
            runtime: Runtime {
                image: runtime_image.to_owned(),
                ..Runtime::default()
            },
            builder,
            ..EnvironmentSpec::default()
        };
        self.store
            .create(Environment::new("default", name, spec).into())
            .await
            .expect("create env");
    }

    async fn package(&self, name: &str, env: &str, source: Vec<u8>, buildcmd: &str) -> Package {
        let mut p = Package::new(
            "default",
            name,
            PackageSpec {
                environment: ObjectReference {
                    namespace: "default".to_owned(),
                    name: env.to_owned(),
                },
                source: Archive::literal(source),
                buildcmd: buildcmd.to_owned(),
                ..PackageSpec::default()
            },
        );
        p.status.buildstatus = "pending".to_owned();
        match self.store.create(p.into()).await.expect("create package") {
            AnyResource::Package(p) => p,
            _ => panic!("not a package"),
        }
    }

    async fn function(&self, name: &str, pkg: &Package) -> Function {
        let mut spec = FunctionSpec::default();
        spec.environment = pkg.spec.environment.clone();
        spec.package.packageref.namespace = "default".to_owned();
        spec.package.packageref.name = pkg.metadata.name.clone();
        spec.package.packageref.resourceversion = pkg.metadata.resource_version.clone();
        spec.package.function_name = "main".to_owned();
        match self
            .store
            .create(Function::new("default", name, spec).into())
            .await
            .expect("create function")
        {
            AnyResource::Function(f) => f,
            _ => panic!("not a function"),
        }
    }

    async fn get_package(&self, name: &str) -> Package {
        match self
            .store
            .get(ResourceKind::Package, "default", name)
            .await
            .expect("get")
        {
            AnyResource::Package(p) => p,
            _ => panic!("not a package"),
        }
    }

    async fn get_function(&self, name: &str) -> Function {
        match self
            .store
            .get(ResourceKind::Function, "default", name)
            .await
            .expect("get")
        {
            AnyResource::Function(f) => f,
            _ => panic!("not a function"),
        }
    }

    /// Wait until the package reaches `succeeded` or `failed`.
    async fn finished(&self, name: &str, secs: u64) -> Package {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let p = self.get_package(name).await;
            if p.status.buildstatus == "succeeded" || p.status.buildstatus == "failed" {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "package {name} still {} after {secs}s",
                p.status.buildstatus
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_status(&self, name: &str, status: &str, secs: u64) -> Package {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let p = self.get_package(name).await;
            if p.status.buildstatus == status {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "package {name} still {} after {secs}s",
                p.status.buildstatus
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The files of a package's deployment, unpacked.
    fn deployment_files(&self, p: &Package) -> tempfile::TempDir {
        assert_eq!(p.spec.deployment.archive_type, "url");
        assert_eq!(p.spec.deployment.checksum.checksum_type, "sha256");
        let id = archive_id_from_url(&p.spec.deployment.url).expect("archive url");
        assert_eq!(id, p.spec.deployment.checksum.sum);
        let bytes = self.archives.get(id).expect("archive stored");
        let out = tempfile::tempdir().expect("tempdir");
        fission_unpack::unzip(&bytes, &out.path().join("d"), Default::default()).expect("unzip");
        out
    }

    fn work_dir_is_empty(&self) -> bool {
        let root = self.dir.path().join("builds/default");
        !root.exists() || std::fs::read_dir(&root).expect("ls").next().is_none()
    }
}

fn zip_of(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut buf);
        for (name, data) in entries {
            w.start_file(*name, zip::write::SimpleFileOptions::default())
                .expect("start");
            w.write_all(data.as_bytes()).expect("write");
        }
        w.finish().expect("finish");
    }
    buf.into_inner()
}

fn read(dir: &Path, rel: &str) -> String {
    std::fs::read_to_string(dir.join("d").join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[tokio::test]
async fn node_build_installs_and_deploys_and_repins_functions() {
    let Some(_) = require("npm", "apt-get install npm", binary_on_path("npm")) else {
        return;
    };
    let mut h = Harness::new();
    h.env("node", "fission/node-builder", "build").await;
    let src = zip_of(&[
        (
            "package.json",
            r#"{"name": "hello", "version": "1.0.0", "main": "hello.js"}"#,
        ),
        (
            "hello.js",
            "module.exports = async () => ({status: 200, body: 'hi'});\n",
        ),
    ]);
    let pkg = h.package("hello-pkg", "node", src, "").await;
    let f = h.function("hello", &pkg).await;
    h.start();

    let built = h.finished("hello-pkg", 120).await;
    assert_eq!(
        built.status.buildstatus, "succeeded",
        "log:\n{}",
        built.status.buildlog
    );
    let log = &built.status.buildlog;
    assert!(log.contains("the built-in Node.js builder"), "{log}");
    assert!(log.contains("npm install --no-audit --no-fund"), "{log}");
    assert!(log.contains("Build succeeded in"), "{log}");
    assert!(built.status.last_update_timestamp.is_some());

    let files = h.deployment_files(&built);
    assert!(read(files.path(), "hello.js").contains("status: 200"));
    assert!(
        files.path().join("d/package.json").is_file(),
        "entries at the archive root"
    );

    // Functions are re-pinned right after the package is recorded.
    let deadline = Instant::now() + Duration::from_secs(5);
    let f2 = loop {
        let f2 = h.get_function("hello").await;
        if f2.spec.package.packageref.resourceversion == built.metadata.resource_version {
            break f2;
        }
        assert!(
            Instant::now() < deadline,
            "function not re-pinned: {:?}",
            f2.spec.package.packageref
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_ne!(f2.metadata.resource_version, f.metadata.resource_version);

    // The output was streamed to the log store too.
    let records = h.logs.read("default", "pkg:hello-pkg", 1000).expect("logs");
    assert!(
        records.iter().any(|r| r.message.contains("npm install")),
        "{records:?}"
    );
    h.stop().await;
    assert!(h.work_dir_is_empty(), "work directory cleaned");
}

#[tokio::test]
async fn python_build_without_requirements_succeeds() {
    let mut h = Harness::new();
    h.env("py", "fission/python-builder", "build").await;
    h.package(
        "py-pkg",
        "py",
        zip_of(&[("main.py", "def main():\n    return 'hi'\n")]),
        "",
    )
    .await;
    h.start();
    let built = h.finished("py-pkg", 60).await;
    assert_eq!(
        built.status.buildstatus, "succeeded",
        "log:\n{}",
        built.status.buildlog
    );
    assert!(
        built
            .status
            .buildlog
            .contains("No requirements.txt in the source: nothing to install"),
        "{}",
        built.status.buildlog
    );
    let files = h.deployment_files(&built);
    assert_eq!(
        read(files.path(), "main.py"),
        "def main():\n    return 'hi'\n"
    );
    h.stop().await;
}

#[tokio::test]
async fn custom_build_command_runs_a_script_from_the_source_with_src_and_deploy_dirs() {
    let mut h = Harness::new();
    // No builder image at all: a custom command needs none.
    h.env("plain", "", "").await;
    let script = "set -e\necho \"building in $(pwd)\"\nmkdir -p \"$DEPLOY_PKG\"\ncp main.py \"$DEPLOY_PKG/\"\n\
                  echo generated > \"$DEPLOY_PKG/extra.txt\"\necho \"home=$HOME\"\n";
    let src = zip_of(&[
        ("main.py", "def main(): return 'x'\n"),
        ("build.sh", script),
    ]);
    let pkg = h.package("custom", "plain", src, "./build.sh").await;
    h.function("f", &pkg).await;
    h.start();
    let built = h.finished("custom", 60).await;
    let log = &built.status.buildlog;
    assert_eq!(built.status.buildstatus, "succeeded", "log:\n{log}");
    assert!(log.contains("$ /bin/sh $SRC_PKG/build.sh"), "{log}");
    assert!(log.contains("building in "), "{log}");
    let files = h.deployment_files(&built);
    assert_eq!(read(files.path(), "extra.txt"), "generated\n");
    assert!(files.path().join("d/main.py").is_file());
    assert!(
        !files.path().join("d/build.sh").exists(),
        "only what the command deployed"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_failing_build_is_failed_with_its_log_and_leaves_functions_alone() {
    let mut h = Harness::new();
    h.env("plain", "", "").await;
    let src = zip_of(&[("build.sh", "echo about to fail\necho oops >&2\nexit 3\n")]);
    let pkg = h.package("bad", "plain", src, "sh build.sh").await;
    let f = h.function("f", &pkg).await;
    h.start();
    let done = h.finished("bad", 60).await;
    let log = &done.status.buildlog;
    assert_eq!(done.status.buildstatus, "failed", "{log}");
    assert!(
        log.contains("about to fail") && log.contains("oops"),
        "{log}"
    );
    assert!(
        log.contains("error building source package: sh failed: exit status 3"),
        "{log}"
    );
    assert!(done.spec.deployment.is_empty());
    let f2 = h.get_function("f").await;
    assert_eq!(
        f2.metadata.resource_version, f.metadata.resource_version,
        "function untouched"
    );
    h.stop().await;
    assert!(h.work_dir_is_empty());
}

#[tokio::test]
async fn a_build_past_its_timeout_is_killed_and_failed() {
    let mut h = Harness::new();
    h.env("plain", "", "").await;
    h.package("slow", "plain", zip_of(&[("a.txt", "a")]), "sleep 30")
        .await;
    let mut config = h.config();
    config.build_timeout = Duration::from_secs(1);
    let started = Instant::now();
    h.start_with(config);
    let done = h.finished("slow", 20).await;
    assert_eq!(done.status.buildstatus, "failed");
    assert!(
        done.status.buildlog.contains("did not finish within 1s"),
        "{}",
        done.status.buildlog
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    h.stop().await;
}

#[tokio::test]
async fn a_hostile_source_zip_is_refused() {
    let mut h = Harness::new();
    h.env("plain", "", "").await;
    let src = zip_of(&[("ok.txt", "fine"), ("../../../escaped.txt", "pwned")]);
    h.package("evil", "plain", src, "./build.sh").await;
    h.start();
    let done = h.finished("evil", 30).await;
    assert_eq!(done.status.buildstatus, "failed");
    assert!(
        done.status
            .buildlog
            .contains("refusing to unpack zip entry '../../../escaped.txt'"),
        "{}",
        done.status.buildlog
    );
    for up in [
        h.dir.path().join("escaped.txt"),
        h.dir.path().join("builds/escaped.txt"),
    ] {
        assert!(!up.exists());
    }
    h.stop().await;
}

#[tokio::test]
async fn an_environment_without_a_builder_fails_the_package_with_a_reason() {
    let mut h = Harness::new();
    h.env("nobuilder", "", "").await;
    h.package("p", "nobuilder", zip_of(&[("main.py", "")]), "")
        .await;
    h.start();
    let done = h.finished("p", 30).await;
    assert_eq!(done.status.buildstatus, "failed");
    assert!(
        done.status
            .buildlog
            .contains("environment 'nobuilder' has no builder"),
        "{}",
        done.status.buildlog
    );
    h.stop().await;
}

#[tokio::test]
async fn a_newer_source_supersedes_a_running_build() {
    let mut h = Harness::new();
    h.env("plain", "", "").await;
    let slow = zip_of(&[(
        "build.sh",
        "echo v1 > marker\nsleep 30\ncp -r \"$SRC_PKG\" \"$DEPLOY_PKG\"\n",
    )]);
    h.package("p", "plain", slow, "sh build.sh").await;
    h.start();
    let mut running = h.wait_status("p", "running", 30).await;
    let started = Instant::now();
    running.spec.source = Archive::literal(zip_of(&[(
        "build.sh",
        "echo v2 > marker\ncp -r \"$SRC_PKG\" \"$DEPLOY_PKG\"\n",
    )]));
    running.status.buildstatus = "pending".to_owned();
    h.store.update(running.into()).await.expect("update");
    let done = h.finished("p", 30).await;
    assert_eq!(
        done.status.buildstatus, "succeeded",
        "{}",
        done.status.buildlog
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the slow build was cancelled, not waited for"
    );
    let files = h.deployment_files(&done);
    assert_eq!(read(files.path(), "marker"), "v2\n");
    h.stop().await;
}

#[tokio::test]
async fn a_package_left_running_by_a_stopped_server_is_built_again() {
    let mut h = Harness::new();
    h.env("plain", "", "").await;
    let src = zip_of(&[("build.sh", "cp -r \"$SRC_PKG\" \"$DEPLOY_PKG\"\n")]);
    let mut p = h.package("p", "plain", src, "./build.sh").await;
    p.status.buildstatus = "running".to_owned();
    h.store.update(p.into()).await.expect("update");
    h.start();
    let done = h.finished("p", 30).await;
    assert_eq!(
        done.status.buildstatus, "succeeded",
        "{}",
        done.status.buildlog
    );
    h.stop().await;
}

#[tokio::test]
async fn shutdown_stops_a_running_build_promptly() {
    let mut h = Harness::new();
    h.env("plain", "", "").await;
    h.package("p", "plain", zip_of(&[("a.txt", "a")]), "sleep 60")
        .await;
    h.start();
    h.wait_status("p", "running", 30).await;
    let started = Instant::now();
    h.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn deleting_a_package_stops_its_build() {
    let mut h = Harness::new();
    h.env("plain", "", "").await;
    h.package("p", "plain", zip_of(&[("a.txt", "a")]), "sleep 60")
        .await;
    h.start();
    h.wait_status("p", "running", 30).await;
    assert!(!h.work_dir_is_empty());
    h.store
        .delete(ResourceKind::Package, "default", "p")
        .await
        .expect("delete");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !h.work_dir_is_empty() {
        assert!(Instant::now() < deadline, "the build was not stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.stop().await;
}

#[tokio::test]
async fn sources_in_the_archive_store_are_checksummed() {
    let mut h = Harness::new();
    h.env("plain", "", "").await;
    let src = zip_of(&[
        ("build.sh", "cp -r \"$SRC_PKG\" \"$DEPLOY_PKG\"\n"),
        ("big.txt", "data"),
    ]);
    let id = h.archives.put(&src).expect("put");
    let url_archive = |sum: &str| Archive {
        archive_type: "url".to_owned(),
        url: format!("{}{id}", fission_store::archive::STORAGE_URL_PREFIX),
        checksum: fission_core::resources::Checksum {
            checksum_type: "sha256".to_owned(),
            sum: sum.to_owned(),
        },
        ..Archive::default()
    };
    for (name, sum) in [("good", id.clone()), ("tampered", "0".repeat(64))] {
        let mut p = h.package(name, "plain", Vec::new(), "./build.sh").await;
        p.spec.source = url_archive(&sum);
        h.store.update(p.into()).await.expect("update");
    }
    h.start();
    let good = h.finished("good", 30).await;
    assert_eq!(
        good.status.buildstatus, "succeeded",
        "{}",
        good.status.buildlog
    );
    assert_eq!(read(h.deployment_files(&good).path(), "big.txt"), "data");
    let bad = h.finished("tampered", 30).await;
    assert_eq!(bad.status.buildstatus, "failed");
    assert!(
        bad.status
            .buildlog
            .contains("source archive checksum mismatch"),
        "{}",
        bad.status.buildlog
    );
    h.stop().await;
}

/// Builds "elsewhere": records what it was asked, answers a fixed result.
#[derive(Debug)]
struct Elsewhere {
    result: Result<Archive, String>,
    asked: std::sync::Mutex<Vec<String>>,
}

impl fission_builder::RemoteBuilds for Elsewhere {
    fn handles(&self, env: &Environment) -> bool {
        env.spec
            .builder
            .as_ref()
            .is_some_and(|b| !b.image.is_empty())
    }

    fn build<'a>(
        &'a self,
        pkg: &'a Package,
        env: &'a Environment,
        log: &'a fission_builder::RemoteLog,
    ) -> futures::future::BoxFuture<'a, Result<Archive, String>> {
        Box::pin(async move {
            self.asked
                .lock()
                .expect("lock")
                .push(format!("{}@{}", pkg.metadata.name, env.metadata.name));
            log.output("Collecting six\nSuccessfully installed six-1.16.0\n");
            self.result.clone()
        })
    }

    fn describe(&self) -> String {
        "in a builder pod".to_owned()
    }
}

#[tokio::test]
async fn packages_of_an_environment_with_a_builder_pod_are_built_there_and_recorded_here() {
    let mut h = Harness::new();
    h.env("python", "fission/python-builder", "").await;
    h.env("plain", "", "").await;
    let deployment = Archive {
        archive_type: "url".to_owned(),
        url: "http://storagesvc.fission/v1/archive?id=%2Ffission%2Ffission-functions%2Fabc"
            .to_owned(),
        checksum: fission_core::resources::Checksum {
            checksum_type: "sha256".to_owned(),
            sum: "abc".to_owned(),
        },
        ..Archive::default()
    };
    let remote = Arc::new(Elsewhere {
        result: Ok(deployment.clone()),
        asked: Default::default(),
    });
    let pkg = h
        .package("remote", "python", zip_of(&[("main.py", "x=1\n")]), "")
        .await;
    let f = h.function("f", &pkg).await;
    // A custom command in an environment without a builder image still builds here.
    let local = h
        .package(
            "local",
            "plain",
            zip_of(&[("build.sh", "cp -r \"$SRC_PKG\" \"$DEPLOY_PKG\"\n")]),
            "sh build.sh",
        )
        .await;
    let mut config = h.config();
    config.remote = Some(remote.clone());
    h.start_with(config);
    let done = h.finished("remote", 30).await;
    let log = &done.status.buildlog;
    assert_eq!(done.status.buildstatus, "succeeded", "{log}");
    assert_eq!(done.spec.deployment, deployment);
    assert!(log.contains("Building in a builder pod"), "{log}");
    assert!(log.contains("Successfully installed six-1.16.0"), "{log}");
    // Re-pinning follows the package write.
    let deadline = Instant::now() + Duration::from_secs(10);
    while h
        .get_function("f")
        .await
        .spec
        .package
        .packageref
        .resourceversion
        != done.metadata.resource_version
    {
        assert!(
            Instant::now() < deadline,
            "function not re-pinned to the remote build (was {})",
            f.spec.package.packageref.resourceversion
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let built_here = h.finished(&local.metadata.name, 60).await;
    assert_eq!(
        built_here.status.buildstatus, "succeeded",
        "{}",
        built_here.status.buildlog
    );
    assert_eq!(
        *remote.asked.lock().expect("lock"),
        ["remote@python"],
        "only the builder environment's package went elsewhere"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_remote_build_failure_fails_the_package_with_the_builders_story() {
    let mut h = Harness::new();
    h.env("python", "fission/python-builder", "").await;
    let remote = Arc::new(Elsewhere {
        result: Err("Build timeout due to environment builder not ready".to_owned()),
        asked: Default::default(),
    });
    h.package("p", "python", zip_of(&[("main.py", "x=1\n")]), "")
        .await;
    let mut config = h.config();
    config.remote = Some(remote);
    h.start_with(config);
    let done = h.finished("p", 30).await;
    let log = &done.status.buildlog;
    assert_eq!(done.status.buildstatus, "failed", "{log}");
    assert!(
        log.contains(
            "error building source package: Build timeout due to environment builder not ready"
        ),
        "{log}"
    );
    assert!(done.spec.deployment.is_empty());
    h.stop().await;
}
