//! `rust-compat bench`: the seed client as a performance baseline.
//!
//! Every figure goes through the seed's own `PythonWorkerClient` (spawn, the
//! accept poll, `call`); this file only times it and prints one JSON object:
//!
//! ```text
//! rust-compat bench [--python PATH] [--spawn-python PATH] [--calls N] [--spawn-runs N]
//!                   [--train-mib N] [--train-runs N] [--worker-cpu N]
//! ```
//!
//! `--worker-cpu N` pins each long-lived worker with `taskset -a -p -c N PID`
//! right after the seed has spawned it (the seed keeps the child private, so
//! its pid is read from `/proc/self/task/*/children`), and reports the
//! affinity read back from `/proc/PID/task/*/status`. Spawn runs use
//! `--spawn-python` (e.g. a `taskset -c N python3` wrapper), so the worker is
//! pinned before the interpreter starts.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context};
use burn_p2p_workload::LeaseDataPipelineKind;
use serde_json::{json, Value};

use crate::client::PythonWorkerClient;
use crate::{PythonBatchRef, PythonTorchRuntimeConfig, WORKLOAD_MODULE};

struct Args {
    python: String,
    spawn_python: Option<String>,
    calls: usize,
    spawn_runs: usize,
    train_mib: usize,
    train_runs: usize,
    worker_cpu: Option<usize>,
}

fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut parsed = Args {
        python: crate::PYTHON.to_owned(),
        spawn_python: None,
        calls: 2000,
        spawn_runs: 10,
        train_mib: 64,
        train_runs: 3,
        worker_cpu: None,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        let count = |text: String| -> anyhow::Result<usize> {
            text.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| format!("{flag} must be a positive integer, got {text:?}"))
        };
        match flag.as_str() {
            "--python" => parsed.python = value()?,
            "--spawn-python" => parsed.spawn_python = Some(value()?),
            "--calls" => parsed.calls = count(value()?)?,
            "--spawn-runs" => parsed.spawn_runs = count(value()?)?,
            "--train-mib" => parsed.train_mib = count(value()?)?,
            "--train-runs" => parsed.train_runs = count(value()?)?,
            "--worker-cpu" => parsed.worker_cpu = Some(value()?.parse().context("--worker-cpu")?),
            other => bail!("unknown argument {other:?} (see src/bench.rs)"),
        }
    }
    Ok(parsed)
}

fn config(python: &str, python_root: &Path) -> PythonTorchRuntimeConfig {
    PythonTorchRuntimeConfig {
        python_executable: python.into(),
        workload_factory: format!("{WORKLOAD_MODULE}:make"),
        workload_config: json!({}),
        module_search_roots: vec![python_root.to_path_buf()],
        // The seed gives the worker /dev/null as stdin, so no exit-on-EOF guard here.
        env: BTreeMap::from([(
            "BURN_P2P_WORKER_MAX_FRAME_BYTES".to_owned(),
            (256 * 1024 * 1024).to_string(),
        )]),
    }
}

/// The live children of this process (the seed reaps each worker on drop).
fn children() -> Vec<u32> {
    let mut pids = Vec::new();
    if let Ok(tasks) = fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(text) = fs::read_to_string(task.path().join("children")) {
                pids.extend(text.split_whitespace().filter_map(|pid| pid.parse::<u32>().ok()));
            }
        }
    }
    pids
}

/// The CPU list every thread of `pid` may run on, comma-joined when they differ.
pub(crate) fn affinity(pid: u32) -> String {
    let mut lists = std::collections::BTreeSet::new();
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(status) = fs::read_to_string(task.path().join("status")) {
                if let Some(line) = status.lines().find(|line| line.starts_with("Cpus_allowed_list:")) {
                    lists.insert(line["Cpus_allowed_list:".len()..].trim().to_owned());
                }
            }
        }
    }
    lists.into_iter().collect::<Vec<_>>().join("|")
}

fn pin(cpu: usize) -> anyhow::Result<(u32, String)> {
    let pids = children();
    ensure!(pids.len() == 1, "expected one live worker child, found {pids:?}");
    let pid = pids[0];
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("run taskset")?;
    ensure!(status.success(), "taskset -a -p -c {cpu} {pid}: {status}");
    Ok((pid, affinity(pid)))
}

fn sorted_micros(mut samples: Vec<Duration>) -> Vec<f64> {
    samples.sort();
    samples.into_iter().map(|d| d.as_secs_f64() * 1e6).collect()
}

fn median(sorted: &[f64]) -> f64 {
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub(crate) fn run(args: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let args = parse(args)?;
    let python_root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../python")
        .canonicalize()
        .context("resolve python/")?;
    let spawn_python = args.spawn_python.clone().unwrap_or_else(|| args.python.clone());

    // Spawn to the first answered hello, through the seed's spawn (with its 25 ms accept poll).
    let spawn_config = config(&spawn_python, &python_root);
    drop(PythonWorkerClient::spawn(&spawn_config).context("spawn (warm-up)")?);
    let mut spawn = Vec::with_capacity(args.spawn_runs);
    for _ in 0..args.spawn_runs {
        let started = Instant::now();
        let client = PythonWorkerClient::spawn(&spawn_config).context("spawn")?;
        client.hello().context("hello after spawn")?;
        spawn.push(started.elapsed());
        drop(client);
    }
    let spawn_ms: Vec<f64> = sorted_micros(spawn).into_iter().map(|us| us / 1e3).collect();

    let client = PythonWorkerClient::spawn(&config(&args.python, &python_root)).context("spawn")?;
    let (pid, worker_affinity) = match args.worker_cpu {
        Some(cpu) => pin(cpu)?,
        None => {
            let pids = children();
            (pids.first().copied().unwrap_or(0), pids.first().map(|pid| affinity(*pid)).unwrap_or_default())
        }
    };

    for _ in 0..args.calls.min(1000) {
        client.hello().context("hello (warm-up)")?;
    }
    let mut hellos = Vec::with_capacity(args.calls);
    for _ in 0..args.calls {
        let call = Instant::now();
        client.hello().context("hello")?;
        hellos.push(call.elapsed());
    }
    let hello_us = sorted_micros(hellos);

    let model = client.init_model("cpu").context("init_model")?;
    let padding = "x".repeat(args.train_mib * 1024 * 1024);
    let batch = PythonBatchRef::MicroEpoch {
        lease_id: "bench".into(),
        microshard_ids: vec!["bench-0".into()],
        ordinals: vec![0],
        bytes_len: padding.len() as u64,
        pipeline_kind: LeaseDataPipelineKind::GeneratedDataset,
        payload: json!({ "seed": 1, "examples_per_microshard": 8, "padding": padding }),
    };
    drop(padding);
    let batches = std::slice::from_ref(&batch);
    // What the seed's `call` puts on the wire for this request.
    let frame_bytes = 8 + serde_json::to_vec(&json!({
        "id": 1, "method": "train_window", "params": { "model_id": model, "batches": batches },
    }))?
    .len();
    client.train_window(&model, batches).context("train_window (warm-up)")?;
    let mut train = Vec::with_capacity(args.train_runs);
    for _ in 0..args.train_runs {
        let started = Instant::now();
        client.train_window(&model, batches).context("train_window")?;
        train.push(started.elapsed());
    }
    let train_ms: Vec<f64> = sorted_micros(train).into_iter().map(|us| us / 1e3).collect();
    drop(client);

    let train_median = median(&train_ms);
    let report: Value = json!({
        "client": "rust-seed",
        "worker_pid": pid,
        "worker_affinity": worker_affinity,
        "client_affinity": affinity(std::process::id()),
        "hello": { "n": hello_us.len(), "median_us": median(&hello_us), "p99_us": quantile(&hello_us, 0.99) },
        "spawn_to_hello": { "n": spawn_ms.len(), "median_ms": median(&spawn_ms), "python": spawn_python },
        "train_window": {
            "mib": args.train_mib,
            "frame_bytes": frame_bytes,
            "runs": train_ms.len(),
            "median_ms": train_median,
            "mb_per_s": frame_bytes as f64 / 1e6 / (train_median / 1e3),
        },
    });
    println!("{report}");
    Ok(())
}
