//! `RuntimePatch` as the reference client serializes it for `apply_patch`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PatchClass {
    Hot,
    Warm,
    Cold,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PatchValue {
    Bool(bool),
    I64(i64),
    F64(f64),
    String(String),
    StringList(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuntimePatch {
    pub patch_id: String,
    pub class: PatchClass,
    pub summary: String,
    pub values: BTreeMap<String, PatchValue>,
    pub required_client_capabilities: Vec<String>,
}
