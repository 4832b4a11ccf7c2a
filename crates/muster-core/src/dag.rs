//! The rules of a step DAG, as a runner reports it (seed 000): nodes with unique ids, edges
//! between them, bounded in size.

use std::collections::HashSet;

use serde_json::Value;

use crate::limits::MAX_DAG_NODES;

/// Why a DAG is refused; the message names the node or edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DagError(String);

/// A node's id: a string, or an integer (written as its decimal text).
fn node_id(value: Option<&Value>) -> Option<String> {
    value.and_then(|id| {
        id.as_str()
            .map(str::to_string)
            .or_else(|| id.as_i64().map(|number| number.to_string()))
    })
}

/// A DAG's nodes each have an id, unique; every edge's `from` and `to` name one of them; at
/// most [`MAX_DAG_NODES`] nodes and as many edges.
pub fn validate_dag(nodes: &[Value], edges: &[Value]) -> Result<(), DagError> {
    if nodes.len() > MAX_DAG_NODES || edges.len() > MAX_DAG_NODES {
        return Err(DagError(format!(
            "a DAG has at most {MAX_DAG_NODES} nodes and {MAX_DAG_NODES} edges"
        )));
    }
    let mut ids = HashSet::new();
    for (index, node) in nodes.iter().enumerate() {
        let id = node_id(node.get("id"))
            .ok_or_else(|| DagError(format!("nodes[{index}].id: required, a string")))?;
        if !ids.insert(id.clone()) {
            return Err(DagError(format!("nodes[{index}].id: '{id}' appears twice")));
        }
    }
    for (index, edge) in edges.iter().enumerate() {
        for end in ["from", "to"] {
            let id = node_id(edge.get(end))
                .ok_or_else(|| DagError(format!("edges[{index}].{end}: required, a node id")))?;
            if !ids.contains(&id) {
                return Err(DagError(format!(
                    "edges[{index}].{end}: no node has id '{id}'"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_dag;
    use serde_json::json;

    #[test]
    fn nodes_need_unique_ids_and_edges_known_ends() {
        let nodes = [json!({"id": "a"}), json!({"id": 2})];
        assert_eq!(
            validate_dag(&nodes, &[json!({"from": "a", "to": 2})]),
            Ok(())
        );
        let error =
            validate_dag(&[json!({"id": "a"}), json!({"id": "a"})], &[]).expect_err("twice");
        assert!(error.to_string().contains("nodes[1].id"), "{error}");
        let error = validate_dag(&[json!({"label": "x"})], &[]).expect_err("no id");
        assert!(
            error.to_string().contains("nodes[0].id: required"),
            "{error}"
        );
        let error = validate_dag(&nodes, &[json!({"from": "a", "to": "z"})]).expect_err("unknown");
        assert!(
            error
                .to_string()
                .contains("edges[0].to: no node has id 'z'"),
            "{error}"
        );
        let error = validate_dag(&nodes, &[json!({"from": "a"})]).expect_err("no end");
        assert!(
            error.to_string().contains("edges[0].to: required"),
            "{error}"
        );
    }
}
