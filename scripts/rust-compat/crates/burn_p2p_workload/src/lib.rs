//! burn_p2p_workload types that cross the worker protocol.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EvalSplit {
    Train,
    Validation,
    Test,
    Custom(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PatchOutcome {
    Applied,
    RequiresRestart,
    Rejected(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TrainerCanonicalReconcileStrategy {
    Replace,
    RootEma { canonical_weight: f64 },
}

/// The `pipeline_kind` of a `micro_epoch` batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeaseDataPipelineKind {
    ShardedStatic,
    IndexedDataset,
    GeneratedDataset,
    Custom,
}
