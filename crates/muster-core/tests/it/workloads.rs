//! The workload lifecycle: every status against every operation, as one table written out row
//! by row, plus the properties the table implies and that must hold however the rules are
//! rearranged; and the checks of what a caller sends.

use muster_core::WorkloadOperation::{Report, RunnerDeleted};
use muster_core::WorkloadStatus::{Failed, Running, Starting, Stopped, Stopping};
use muster_core::workload::{check_containers, check_workload_id};
use muster_core::{
    Container, ContainerRole, ContainerStatus, ErrorCode, WorkloadChange, WorkloadOperation,
    WorkloadRefusal, WorkloadStatus, workload_transition,
};

type Expected = Result<WorkloadChange, WorkloadRefusal>;

/// Moved to `status`, with a history entry and the report's containers.
fn moved(status: WorkloadStatus) -> Expected {
    Ok(WorkloadChange {
        status,
        status_changed: true,
        replace_details: true,
    })
}

/// The same status again: the containers are refreshed, the history untouched.
fn refreshed(status: WorkloadStatus) -> Expected {
    Ok(WorkloadChange {
        status,
        status_changed: false,
        replace_details: true,
    })
}

fn backwards(current: WorkloadStatus, wanted: WorkloadStatus) -> Expected {
    Err(WorkloadRefusal::Backwards { current, wanted })
}

fn final_(current: WorkloadStatus, wanted: WorkloadStatus) -> Expected {
    Err(WorkloadRefusal::Final { current, wanted })
}

/// Failed because its runner is gone: a history entry, the last containers kept.
fn orphaned() -> Expected {
    Ok(WorkloadChange {
        status: Failed,
        status_changed: true,
        replace_details: false,
    })
}

/// Left as it is.
fn untouched(status: WorkloadStatus) -> Expected {
    Ok(WorkloadChange {
        status,
        status_changed: false,
        replace_details: false,
    })
}

fn every_operation() -> Vec<WorkloadOperation> {
    let mut operations: Vec<WorkloadOperation> =
        WorkloadStatus::ALL.into_iter().map(Report).collect();
    operations.push(RunnerDeleted);
    // No wildcard: a new operation does not compile until this list (and the table) has it.
    for operation in &operations {
        match operation {
            Report(_) | RunnerDeleted => {}
        }
    }
    operations
}

fn table() -> Vec<(WorkloadStatus, WorkloadOperation, Expected)> {
    vec![
        (Starting, Report(Starting), refreshed(Starting)),
        (Starting, Report(Running), moved(Running)),
        (Starting, Report(Stopping), moved(Stopping)),
        (Starting, Report(Stopped), moved(Stopped)),
        (Starting, Report(Failed), moved(Failed)),
        (Starting, RunnerDeleted, orphaned()),
        (Running, Report(Starting), backwards(Running, Starting)),
        (Running, Report(Running), refreshed(Running)),
        (Running, Report(Stopping), moved(Stopping)),
        (Running, Report(Stopped), moved(Stopped)),
        (Running, Report(Failed), moved(Failed)),
        (Running, RunnerDeleted, orphaned()),
        (Stopping, Report(Starting), backwards(Stopping, Starting)),
        (Stopping, Report(Running), backwards(Stopping, Running)),
        (Stopping, Report(Stopping), refreshed(Stopping)),
        (Stopping, Report(Stopped), moved(Stopped)),
        (Stopping, Report(Failed), moved(Failed)),
        (Stopping, RunnerDeleted, orphaned()),
        (Stopped, Report(Starting), final_(Stopped, Starting)),
        (Stopped, Report(Running), final_(Stopped, Running)),
        (Stopped, Report(Stopping), final_(Stopped, Stopping)),
        (Stopped, Report(Stopped), refreshed(Stopped)),
        (Stopped, Report(Failed), final_(Stopped, Failed)),
        (Stopped, RunnerDeleted, untouched(Stopped)),
        (Failed, Report(Starting), final_(Failed, Starting)),
        (Failed, Report(Running), final_(Failed, Running)),
        (Failed, Report(Stopping), final_(Failed, Stopping)),
        (Failed, Report(Stopped), final_(Failed, Stopped)),
        (Failed, Report(Failed), refreshed(Failed)),
        (Failed, RunnerDeleted, untouched(Failed)),
    ]
}

#[test]
fn every_status_against_every_operation_is_in_the_table_once() {
    let table = table();
    assert_eq!(
        table.len(),
        WorkloadStatus::ALL.len() * every_operation().len()
    );
    for status in WorkloadStatus::ALL {
        for operation in every_operation() {
            let rows = table
                .iter()
                .filter(|(current, op, _)| *current == status && *op == operation)
                .count();
            assert_eq!(rows, 1, "{status} × {operation:?} is in the table once");
        }
    }
}

#[test]
fn every_transition_is_as_the_table_says() {
    for (current, operation, expected) in table() {
        assert_eq!(
            workload_transition(current, operation),
            expected,
            "{current} × {operation:?}"
        );
    }
}

#[test]
fn a_final_status_never_changes_and_nothing_moves_backwards() {
    for current in WorkloadStatus::ALL {
        for operation in every_operation() {
            let Ok(change) = workload_transition(current, operation) else {
                continue;
            };
            if current.is_final() {
                assert_eq!(change.status, current, "{current} × {operation:?}");
                assert!(!change.status_changed);
            }
            let order = |status: WorkloadStatus| {
                WorkloadStatus::ALL
                    .iter()
                    .position(|known| *known == status)
                    .unwrap_or(usize::MAX)
            };
            assert!(
                order(change.status) >= order(current) || change.status == Failed,
                "{current} × {operation:?} moved back to {}",
                change.status
            );
            assert_eq!(
                change.status_changed,
                change.status != current,
                "the history changes exactly when the status does"
            );
        }
    }
}

#[test]
fn a_refusal_is_an_invalid_state_naming_both_statuses() {
    let refusal = workload_transition(Stopped, Report(Running)).expect_err("final");
    assert_eq!(refusal.code(), ErrorCode::InvalidState);
    let message = refusal.to_string();
    assert!(
        message.contains("stopped") && message.contains("running"),
        "{message}"
    );
    let refusal = workload_transition(Stopping, Report(Starting)).expect_err("backwards");
    assert!(
        refusal.to_string().contains("back to starting"),
        "{refusal}"
    );
}

#[test]
fn the_wire_names_round_trip() {
    for status in WorkloadStatus::ALL {
        assert_eq!(WorkloadStatus::parse(status.as_str()), Some(status));
    }
    for role in ContainerRole::ALL {
        assert_eq!(ContainerRole::parse(role.as_str()), Some(role));
    }
    for status in ContainerStatus::ALL {
        assert_eq!(ContainerStatus::parse(status.as_str()), Some(status));
    }
    assert_eq!(WorkloadStatus::parse("RUNNING"), None);
    assert_eq!(WorkloadStatus::parse(""), None);
}

#[test]
fn workload_ids_are_short_and_safe_in_a_url() {
    for good in [
        "w-1",
        "0190f3a2-7c1e-7d4e-9a1b-2f6c8d9e0a1b",
        "ns:thread.42_a",
    ] {
        assert_eq!(check_workload_id("id", good), Ok(()), "{good}");
    }
    for bad in ["", "a/b", "a b", "ü", "a?x", &"x".repeat(129)] {
        let error = check_workload_id("id", bad).expect_err(bad);
        assert_eq!(error.field, "id");
    }
}

fn container(id: &str) -> Container {
    Container {
        container_id: id.into(),
        name: "main".into(),
        role: ContainerRole::Main,
        image: "registry.example/agent:1".into(),
        status: ContainerStatus::Running,
    }
}

#[test]
fn containers_are_bounded_and_each_listed_once() {
    assert_eq!(
        check_containers("containers", &[container("a"), container("b")]),
        Ok(())
    );
    let twice = check_containers("containers", &[container("a"), container("a")])
        .expect_err("a container twice");
    assert_eq!(twice.field, "containers[1].container_id");
    let empty_id = check_containers("containers", &[container("")]).expect_err("no id");
    assert_eq!(empty_id.field, "containers[0].container_id");
    let many: Vec<Container> = (0..65).map(|n| container(&n.to_string())).collect();
    assert!(check_containers("containers", &many).is_err());
}
