//! Drives our Python worker through the reference Rust client, unchanged.
//!
//! The client is compiled straight from the shared seed file; this crate only
//! supplies what it imports from `crate::` and the burn_p2p stub crates.

#[path = "../../../../shared/seeds/000_1c8a35757d4d6f55.txt"]
mod client;
mod bench;

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context};
use burn_p2p_core::{MergePolicy, MetricValue};
use burn_p2p_experiment::{PatchClass, PatchValue, RuntimePatch};
use burn_p2p_workload::{
    EvalSplit, LeaseDataPipelineKind, PatchOutcome, TrainerCanonicalReconcileStrategy,
};
use client::{PythonMergeCandidateRef, PythonWorkerClient};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PythonBatchRef {
    CachedMicroshardGroup {
        shard_paths: Vec<PathBuf>,
        microshard_ids: Vec<String>,
        ordinals: Vec<u32>,
        bytes_len: u64,
    },
    MicroEpoch {
        lease_id: String,
        microshard_ids: Vec<String>,
        ordinals: Vec<u32>,
        bytes_len: u64,
        pipeline_kind: LeaseDataPipelineKind,
        payload: Value,
    },
}

#[derive(Clone, Debug)]
pub struct PythonTorchRuntimeConfig {
    pub python_executable: PathBuf,
    pub workload_factory: String,
    pub workload_config: Value,
    pub module_search_roots: Vec<PathBuf>,
    pub env: BTreeMap<String, String>,
}

const PYTHON: &str = "/usr/bin/python3";
const WORKLOAD_MODULE: &str = "burn_p2p_python_runtime.reference_workload";
const HELLO_ROUNDS: usize = 2000;

type Metrics = BTreeMap<String, MetricValue>;

/// Removes the scratch directory however `main` ends.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("bench") {
        if let Err(error) = bench::run(args) {
            eprintln!("FAIL: {error:#}");
            std::process::exit(1);
        }
        return;
    }
    if let Err(error) = run() {
        eprintln!("FAIL: {error:#}");
        std::process::exit(1);
    }
    println!("OK: every reference client method worked against our worker");
}

fn run() -> anyhow::Result<()> {
    // The seed puts `CARGO_MANIFEST_DIR/python` first on PYTHONPATH; that
    // folder does not exist here, so our runtime comes in as a module root.
    let repo_root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .context("resolve repository root")?;
    let python_root = repo_root.join("python");
    ensure!(
        python_root
            .join("burn_p2p_python_runtime/worker.py")
            .is_file(),
        "worker not found under {}",
        python_root.display()
    );
    let scratch =
        ScratchDir(std::env::temp_dir().join(format!("rust-compat-{}", std::process::id())));
    fs::create_dir_all(&scratch.0).context("create scratch directory")?;

    let workload_config = json!({
        "dataset_seed": 7,
        "seed": 1,
        "learning_rate": 0.05,
        "examples_per_microshard": 32,
    });
    let config = PythonTorchRuntimeConfig {
        python_executable: PYTHON.into(),
        workload_factory: format!("{WORKLOAD_MODULE}:make"),
        workload_config: workload_config.clone(),
        module_search_roots: vec![python_root.clone()],
        env: BTreeMap::new(),
    };

    let started = Instant::now();
    let client = PythonWorkerClient::spawn(&config).context("spawn")?;
    let hello = client.hello().context("hello")?;
    let spawn_to_hello = started.elapsed();
    println!(
        "hello -> {hello:?} (spawn to first hello: {})",
        millis(spawn_to_hello)
    );
    ensure!(
        hello.protocol_version == 1,
        "hello: protocol_version {}",
        hello.protocol_version
    );
    ensure!(
        !hello.workload_name.is_empty(),
        "hello: empty workload_name"
    );

    let probe = client.capability_probe().context("capability_probe")?;
    println!("capability_probe -> {probe:?}");
    ensure!(
        !probe.runtime_device.is_empty(),
        "capability_probe: empty runtime_device"
    );
    ensure!(
        probe.capability.work_units_per_second.is_finite()
            && probe.capability.work_units_per_second >= 0.0,
        "capability_probe: work_units_per_second {}",
        probe.capability.work_units_per_second
    );

    let model = client
        .init_model(&probe.runtime_device)
        .context("init_model")?;
    println!("init_model -> {model:?}");
    ensure!(!model.is_empty(), "init_model: empty model id");

    let shard_paths = write_shards(&python_root, &scratch.0, &workload_config, &[0, 1])?;
    let bytes_len = shard_paths
        .iter()
        .map(|path| fs::metadata(path).map(|meta| meta.len()))
        .sum::<Result<u64, _>>()
        .context("stat shard files")?;
    println!("write-shards -> {shard_paths:?} ({bytes_len} bytes)");
    let cached = PythonBatchRef::CachedMicroshardGroup {
        shard_paths: shard_paths.clone(),
        microshard_ids: vec!["microshard-0".into(), "microshard-1".into()],
        ordinals: vec![0, 1],
        bytes_len,
    };
    let metrics = client
        .train_window(&model, std::slice::from_ref(&cached))
        .context("train_window cached_microshard_group")?;
    println!(
        "train_window [cached_microshard_group] -> {}",
        show(&metrics)
    );
    check_train_metrics(&metrics, 64)?;

    let micro_epoch = PythonBatchRef::MicroEpoch {
        lease_id: "lease-1".into(),
        microshard_ids: vec!["microshard-2".into(), "microshard-3".into()],
        ordinals: vec![2, 3],
        bytes_len: 0,
        pipeline_kind: LeaseDataPipelineKind::GeneratedDataset,
        payload: json!({ "seed": 11 }),
    };
    let metrics = client
        .train_window(&model, &[micro_epoch.clone(), cached.clone()])
        .context("train_window micro_epoch + cached_microshard_group")?;
    println!(
        "train_window [micro_epoch, cached_microshard_group] -> {}",
        show(&metrics)
    );
    check_train_metrics(&metrics, 128)?;

    for split in [EvalSplit::Train, EvalSplit::Validation, EvalSplit::Test] {
        let metrics = client
            .evaluate(&model, split.clone())
            .with_context(|| format!("evaluate {split:?}"))?;
        println!("evaluate {split:?} -> {}", show(&metrics));
        check_eval_metrics(&metrics)?;
    }
    match client.evaluate(&model, EvalSplit::Custom("holdout-x".into())) {
        Ok(metrics) => bail!("evaluate Custom: expected an error, got {}", show(&metrics)),
        Err(error) => {
            let text = format!("{error:#}");
            println!(
                "evaluate Custom(\"holdout-x\") -> error (expected): {}",
                first_line(&text)
            );
            ensure!(
                text.contains("holdout-x"),
                "evaluate Custom: error does not name the split: {text}"
            );
        }
    }

    let outcome = client
        .apply_patch(&patch("lr-1", "learning_rate", PatchValue::F64(0.01)))
        .context("apply_patch learning_rate")?;
    println!("apply_patch learning_rate=0.01 -> {outcome:?}");
    ensure!(
        outcome == PatchOutcome::Applied,
        "apply_patch learning_rate: {outcome:?}"
    );
    let outcome = client
        .apply_patch(&patch("bogus-1", "no_such_knob", PatchValue::Bool(true)))
        .context("apply_patch unknown key")?;
    println!("apply_patch no_such_knob=true -> {outcome:?}");
    match &outcome {
        PatchOutcome::Rejected(reason) if reason.contains("no_such_knob") => {}
        other => bail!("apply_patch unknown key: expected Rejected naming the key, got {other:?}"),
    }
    let metrics = client
        .train_window(&model, std::slice::from_ref(&micro_epoch))
        .context("train_window after patch")?;
    println!("train_window after patch -> {}", show(&metrics));
    check_train_metrics(&metrics, 64)?;
    let rate = number(&metrics, "learning_rate")?;
    ensure!(
        (rate - 0.01).abs() < 1e-12,
        "learning_rate after patch is {rate}, expected 0.01"
    );

    let artifact = scratch.0.join("model.safetensors");
    client
        .materialize_model_artifact_path(&model, &artifact)
        .context("materialize_model_artifact")?;
    let artifact_len = fs::metadata(&artifact)
        .context("stat materialized artifact")?
        .len();
    println!(
        "materialize_model_artifact -> ok ({artifact_len} bytes at {})",
        artifact.display()
    );
    ensure!(
        artifact_len > 8,
        "materialized artifact is {artifact_len} bytes"
    );

    let copy = client
        .init_model(&probe.runtime_device)
        .context("init_model (copy)")?;
    ensure!(copy != model, "init_model returned a duplicate id {copy}");
    client
        .load_model_artifact_path(&copy, &artifact)
        .context("load_model_artifact")?;
    let original_eval = client
        .evaluate(&model, EvalSplit::Validation)
        .context("evaluate original")?;
    let copy_eval = client
        .evaluate(&copy, EvalSplit::Validation)
        .context("evaluate copy")?;
    println!(
        "load_model_artifact into {copy} -> ok; evaluate copy -> {}",
        show(&copy_eval)
    );
    ensure!(
        original_eval.get("loss") == copy_eval.get("loss"),
        "loaded copy evaluates differently: {} vs {}",
        show(&original_eval),
        show(&copy_eval)
    );

    // Make the copy diverge so merging and EMA have distinct inputs.
    let other_data = PythonBatchRef::MicroEpoch {
        lease_id: "lease-2".into(),
        microshard_ids: vec!["microshard-9".into()],
        ordinals: vec![9],
        bytes_len: 0,
        pipeline_kind: LeaseDataPipelineKind::GeneratedDataset,
        payload: json!({ "seed": 23 }),
    };
    client
        .train_window(&copy, &[other_data])
        .context("train_window copy")?;

    let candidates = [
        candidate("peer-a", &model, 2.0),
        candidate("peer-b", &copy, 1.0),
    ];
    let merged = client
        .merge_candidate_models(&model, &candidates, MergePolicy::WeightedMean)
        .context("merge_candidate_models")?;
    println!("merge_candidate_models WeightedMean -> {merged:?}");
    let Some(merged) = merged else {
        bail!("merge_candidate_models returned no model for two weighted candidates")
    };
    ensure!(
        merged != model && merged != copy,
        "merge reused an input id: {merged}"
    );
    let none = client
        .merge_candidate_models(&model, &[], MergePolicy::WeightedMean)
        .context("merge_candidate_models (no candidates)")?;
    println!("merge_candidate_models [] -> {none:?}");
    ensure!(none.is_none(), "merge with no candidates returned {none:?}");

    let ema = client
        .apply_single_root_ema(&model, &merged, MergePolicy::Ema)
        .context("apply_single_root_ema")?;
    println!("apply_single_root_ema -> {ema:?}");
    ensure!(
        ema == merged,
        "apply_single_root_ema returned {ema}, expected {merged}"
    );

    let replaced = client
        .reconcile_canonical_model(&copy, &merged, TrainerCanonicalReconcileStrategy::Replace)
        .context("reconcile_canonical_model Replace")?;
    println!("reconcile_canonical_model Replace -> {replaced:?}");
    ensure!(
        replaced == merged,
        "reconcile Replace returned {replaced}, expected {merged}"
    );
    let before = client
        .evaluate(&merged, EvalSplit::Validation)
        .context("evaluate canonical")?;
    let blended = client
        .reconcile_canonical_model(
            &copy,
            &merged,
            TrainerCanonicalReconcileStrategy::RootEma {
                canonical_weight: 0.5,
            },
        )
        .context("reconcile_canonical_model RootEma")?;
    let after = client
        .evaluate(&merged, EvalSplit::Validation)
        .context("evaluate reconciled")?;
    println!(
        "reconcile_canonical_model RootEma(0.5) -> {blended:?}; canonical loss {} -> {}",
        number(&before, "loss")?,
        number(&after, "loss")?
    );
    ensure!(
        blended == merged,
        "reconcile RootEma returned {blended}, expected {merged}"
    );

    for id in [&model, &copy, &merged] {
        client.release_model(id);
    }
    client.release_model("never-issued");
    match client.evaluate(&model, EvalSplit::Validation) {
        Ok(metrics) => bail!("evaluate after release_model({model}) still works: {}", show(&metrics)),
        Err(error) => println!(
            "release_model {model}, {copy}, {merged}, never-issued -> ok; evaluate {model} now fails: {}",
            first_line(&format!("{error:#}"))
        ),
    }

    let mut samples = Vec::with_capacity(HELLO_ROUNDS);
    for _ in 0..HELLO_ROUNDS {
        let call = Instant::now();
        client.hello().context("hello (timing)")?;
        samples.push(call.elapsed());
    }
    samples.sort();
    println!(
        "hello x{HELLO_ROUNDS}: median {} (p10 {}, p90 {}, max {})",
        micros(samples[HELLO_ROUNDS / 2]),
        micros(samples[HELLO_ROUNDS / 10]),
        micros(samples[HELLO_ROUNDS * 9 / 10]),
        micros(samples[HELLO_ROUNDS - 1])
    );

    let closing = Instant::now();
    drop(client);
    println!(
        "drop (shutdown, kill, wait) -> {}",
        millis(closing.elapsed())
    );
    Ok(())
}

fn write_shards(
    python_root: &Path,
    out: &Path,
    config: &Value,
    ordinals: &[u32],
) -> anyhow::Result<Vec<PathBuf>> {
    let ordinals = ordinals
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let output = Command::new(PYTHON)
        .args(["-m", WORKLOAD_MODULE, "write-shards", "--out"])
        .arg(out)
        .arg("--config-json")
        .arg(config.to_string())
        .args(["--ordinals", &ordinals])
        .env("PYTHONPATH", python_root)
        .output()
        .context("run write-shards")?;
    ensure!(
        output.status.success(),
        "write-shards exited with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "write-shards output is not a JSON list of paths: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn patch(id: &str, key: &str, value: PatchValue) -> RuntimePatch {
    RuntimePatch {
        patch_id: id.into(),
        class: PatchClass::Hot,
        summary: format!("set {key}"),
        values: BTreeMap::from([(key.to_owned(), value)]),
        required_client_capabilities: Vec::new(),
    }
}

fn candidate<'a>(
    peer_id: &'a str,
    model_id: &'a str,
    sample_weight: f64,
) -> PythonMergeCandidateRef<'a> {
    PythonMergeCandidateRef {
        peer_id,
        head_id: "head-1",
        artifact_id: model_id,
        model_id,
        sample_weight,
        quality_weight: 1.0,
    }
}

fn check_train_metrics(metrics: &Metrics, examples: i64) -> anyhow::Result<()> {
    let loss = number(metrics, "loss")?;
    ensure!(loss.is_finite() && loss >= 0.0, "train loss {loss}");
    let accuracy = number(metrics, "accuracy")?;
    ensure!((0.0..=1.0).contains(&accuracy), "train accuracy {accuracy}");
    let seen = integer(metrics, "examples")?;
    ensure!(
        seen == examples,
        "train examples {seen}, expected {examples}"
    );
    ensure!(integer(metrics, "steps")? > 0, "train steps not positive");
    ensure!(
        number(metrics, "learning_rate")? > 0.0,
        "learning_rate not positive"
    );
    Ok(())
}

fn check_eval_metrics(metrics: &Metrics) -> anyhow::Result<()> {
    let loss = number(metrics, "loss")?;
    ensure!(loss.is_finite() && loss >= 0.0, "eval loss {loss}");
    let accuracy = number(metrics, "accuracy")?;
    ensure!((0.0..=1.0).contains(&accuracy), "eval accuracy {accuracy}");
    ensure!(
        integer(metrics, "examples")? > 0,
        "eval examples not positive"
    );
    match metrics.get("split") {
        Some(MetricValue::Text(_)) => Ok(()),
        other => bail!("eval split should be a string, got {other:?}"),
    }
}

fn number(metrics: &Metrics, key: &str) -> anyhow::Result<f64> {
    match metrics.get(key) {
        Some(MetricValue::Float(value)) => Ok(*value),
        Some(MetricValue::Integer(value)) => Ok(*value as f64),
        other => bail!("metric {key} should be a number, got {other:?}"),
    }
}

fn integer(metrics: &Metrics, key: &str) -> anyhow::Result<i64> {
    match metrics.get(key) {
        Some(MetricValue::Integer(value)) => Ok(*value),
        other => bail!("metric {key} should be an integer, got {other:?}"),
    }
}

fn show(metrics: &Metrics) -> String {
    serde_json::to_string(metrics).unwrap_or_else(|error| format!("<{error}>"))
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1e3)
}

fn micros(duration: Duration) -> String {
    format!("{:.1} µs", duration.as_secs_f64() * 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded<T: Serialize>(value: &T) -> Value {
        serde_json::to_value(value).unwrap()
    }

    #[test]
    fn stub_types_use_the_protocol_json_shapes() {
        assert_eq!(encoded(&EvalSplit::Validation), json!("Validation"));
        assert_eq!(
            encoded(&EvalSplit::Custom("x".into())),
            json!({"Custom": "x"})
        );
        assert_eq!(
            encoded(&MergePolicy::QualityWeightedEma),
            json!("QualityWeightedEma")
        );
        assert_eq!(
            encoded(&MergePolicy::Custom("y".into())),
            json!({"Custom": "y"})
        );
        assert_eq!(
            encoded(&TrainerCanonicalReconcileStrategy::RootEma {
                canonical_weight: 0.25
            }),
            json!({"RootEma": {"canonical_weight": 0.25}})
        );
        assert_eq!(
            encoded(&TrainerCanonicalReconcileStrategy::Replace),
            json!("Replace")
        );
        assert_eq!(
            serde_json::from_value::<PatchOutcome>(json!({"Rejected": "why"})).unwrap(),
            PatchOutcome::Rejected("why".into())
        );
        assert_eq!(
            serde_json::from_value::<PatchOutcome>(json!("RequiresRestart")).unwrap(),
            PatchOutcome::RequiresRestart
        );
        assert_eq!(
            encoded(&patch(
                "p",
                "tags",
                PatchValue::StringList(vec!["a".into()])
            )),
            json!({
                "patch_id": "p", "class": "Hot", "summary": "set tags",
                "values": {"tags": ["a"]}, "required_client_capabilities": [],
            })
        );
        let metrics: Metrics =
            serde_json::from_value(json!({"i": 3, "f": 0.5, "one": 1.0, "b": true, "s": "t"}))
                .unwrap();
        assert_eq!(metrics["i"], MetricValue::Integer(3));
        assert_eq!(metrics["f"], MetricValue::Float(0.5));
        assert_eq!(metrics["one"], MetricValue::Float(1.0));
        assert_eq!(metrics["b"], MetricValue::Bool(true));
        assert_eq!(metrics["s"], MetricValue::Text("t".into()));
    }

    #[test]
    fn batch_refs_are_tagged_by_kind() {
        let micro_epoch = PythonBatchRef::MicroEpoch {
            lease_id: "l".into(),
            microshard_ids: vec!["m".into()],
            ordinals: vec![4],
            bytes_len: 9,
            pipeline_kind: LeaseDataPipelineKind::GeneratedDataset,
            payload: json!({"seed": 1}),
        };
        assert_eq!(
            encoded(&micro_epoch),
            json!({
                "kind": "micro_epoch", "lease_id": "l", "microshard_ids": ["m"], "ordinals": [4],
                "bytes_len": 9, "pipeline_kind": "generated-dataset", "payload": {"seed": 1},
            })
        );
        let cached = PythonBatchRef::CachedMicroshardGroup {
            shard_paths: vec!["/a".into()],
            microshard_ids: vec!["m".into()],
            ordinals: vec![0],
            bytes_len: 1,
        };
        assert_eq!(
            encoded(&cached),
            json!({
                "kind": "cached_microshard_group", "shard_paths": ["/a"], "microshard_ids": ["m"],
                "ordinals": [0], "bytes_len": 1,
            })
        );
    }
}
