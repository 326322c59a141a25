//! Model-based timer sequences: random adds, removes and polls, checkpoints and savepoints
//! (with operations between their two parts) and restores into another number of
//! instances, run on a job of instances and a model of all their timers side by side.

use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use state_api::{
    CheckpointId, CheckpointOptions, KeyedStateBackend, KeyedStateHandle, SnapshotRequest, Timer,
};

use crate::keyed::KeyedTarget;
use crate::keyed::bed::{
    EVENT_TIMERS, NAMESPACES, PROCESSING_TIMERS, RetainedHandles, TestBed, full_range, key_group,
    range_of, timer, timer_states,
};
use crate::keyed::model::Model;

/// The number of sequences [`KeyedContract::TimersModel`](crate::keyed::KeyedContract::TimersModel)
/// runs: few, so that the whole kit stays fast; [`timers_model`] takes any number.
pub const TIMERS_MODEL_CASES: u32 = 8;

/// One timer operation of a [`timers_model`] sequence; small numbers pick keys, namespaces
/// and timestamps so that sequences collide on the same timers.
#[derive(Debug, Clone)]
pub enum TimerOp {
    /// `add_timer` to `processing-timers` (`processing`) or `event-timers`, of the timer
    /// at `timestamp` for key `t<key>` in namespace `namespace % 3`, on the instance owning
    /// the key.
    Add {
        /// Which of the two queues.
        processing: bool,
        /// Key number.
        key: u8,
        /// Namespace number.
        namespace: u8,
        /// The timer's timestamp.
        timestamp: i64,
    },
    /// `remove_timer` of a timer picked as [`TimerOp::Add`] picks one: often one the queue
    /// does not hold.
    Remove {
        /// Which of the two queues.
        processing: bool,
        /// Key number.
        key: u8,
        /// Namespace number.
        namespace: u8,
        /// The timer's timestamp.
        timestamp: i64,
    },
    /// `remove_timer` of the `nth` (modulo their number) of the timers the job holds, if
    /// it holds any.
    RemoveHeld {
        /// Which timer, in the order of (queue, timer).
        nth: u16,
    },
    /// `poll_timers(until, limit)` on every instance: a watermark reaching the job.
    Poll {
        /// Which of the two queues.
        processing: bool,
        /// The watermark.
        until: i64,
        /// At most this many timers per instance.
        limit: usize,
    },
}

/// One step of a [`timers_model`] sequence.
#[derive(Debug, Clone)]
pub enum TimerStep {
    /// An operation.
    Op(TimerOp),
    /// A checkpoint (a savepoint when `savepoint`) of every instance: the synchronous
    /// parts, then `during` (not in the snapshot), then the asynchronous parts; a
    /// checkpoint then completes.
    Checkpoint {
        /// Operations between the two parts.
        during: Vec<TimerOp>,
        /// Whether the snapshot is a savepoint.
        savepoint: bool,
    },
    /// Restore the last snapshot of every instance into `parallelism` instances, check
    /// each, and go on with them.
    Restore {
        /// Instances to restore into.
        parallelism: u32,
    },
}

fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![
        8 => -4i64..8,
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
    ]
}

fn timer_op() -> impl Strategy<Value = TimerOp> {
    let processing = proptest::bool::weighted(0.25);
    let limit = prop_oneof![3 => 0usize..4, 1 => Just(usize::MAX)];
    prop_oneof![
        5 => (processing, 0u8..16, 0u8..3, timestamp()).prop_map(
            |(processing, key, namespace, timestamp)| TimerOp::Add {
                processing,
                key,
                namespace,
                timestamp
            }
        ),
        1 => (processing, 0u8..16, 0u8..3, timestamp()).prop_map(
            |(processing, key, namespace, timestamp)| TimerOp::Remove {
                processing,
                key,
                namespace,
                timestamp
            }
        ),
        2 => any::<u16>().prop_map(|nth| TimerOp::RemoveHeld { nth }),
        2 => (processing, timestamp(), limit).prop_map(|(processing, until, limit)| {
            TimerOp::Poll {
                processing,
                until,
                limit,
            }
        }),
    ]
}

/// Sequences of up to 40 steps, operations most often, restoring into 1 to
/// `max_parallelism` instances.
pub fn timer_steps(max_parallelism: u32) -> impl Strategy<Value = Vec<TimerStep>> {
    let step = prop_oneof![
        7 => timer_op().prop_map(TimerStep::Op),
        2 => (
            proptest::collection::vec(timer_op(), 0..4),
            proptest::bool::weighted(0.3),
        )
            .prop_map(|(during, savepoint)| TimerStep::Checkpoint { during, savepoint }),
        1 => (1..=max_parallelism.max(1)).prop_map(|parallelism| TimerStep::Restore { parallelism }),
    ];
    proptest::collection::vec(step, 1..40)
}

fn queue(processing: bool) -> &'static str {
    match processing {
        true => PROCESSING_TIMERS,
        false => EVENT_TIMERS,
    }
}

fn op_timer(key: u8, namespace: u8, timestamp: i64) -> Timer {
    let key = format!("t{key}").into_bytes();
    timer(timestamp, &key, NAMESPACES[usize::from(namespace % 3)])
}

/// The instance of `job` owning the key group of `key`.
fn owner<'j>(
    job: &'j mut [Box<dyn KeyedStateBackend>],
    key: &[u8],
) -> &'j mut dyn KeyedStateBackend {
    let group = key_group(key);
    job.iter_mut()
        .find(|instance| instance.key_group_range().contains(group))
        .map(|instance| &mut **instance)
        .unwrap_or_else(|| panic!("invariant: the instances of a job own every key group"))
}

fn apply(model: &mut Model, job: &mut [Box<dyn KeyedStateBackend>], op: &TimerOp) {
    match *op {
        TimerOp::Add {
            processing,
            key,
            namespace,
            timestamp,
        } => {
            let timer = op_timer(key, namespace, timestamp);
            model.add_timer(owner(job, &timer.key), queue(processing), &timer);
        }
        TimerOp::Remove {
            processing,
            key,
            namespace,
            timestamp,
        } => {
            let timer = op_timer(key, namespace, timestamp);
            model.remove_timer(owner(job, &timer.key), queue(processing), &timer);
        }
        TimerOp::RemoveHeld { nth } => {
            let held: Vec<(String, Timer)> = model
                .timers
                .iter()
                .flat_map(|(state, timers)| timers.iter().map(|t| (state.clone(), t.clone())))
                .collect();
            if !held.is_empty() {
                let (state, timer) = &held[usize::from(nth) % held.len()];
                model.remove_timer(owner(job, &timer.key), state, timer);
            }
        }
        TimerOp::Poll {
            processing,
            until,
            limit,
        } => {
            for instance in job {
                model.poll_timers(&mut **instance, queue(processing), until, limit);
            }
        }
    }
}

/// Runs `steps` on a job of `target`'s backend (one instance of every key group to begin
/// with) and a model of all its timers side by side; panics at the first difference. After
/// a restore every instance holds exactly the timers of its key groups; at the end every
/// instance fires its timers earliest first. Incremental handles are registered with a
/// [`SharedStateRegistry`](state_coordinator::SharedStateRegistry) as a coordinator would,
/// and resolved for restore. Restores into more than one instance need a target that
/// declares rescaling.
pub fn run_timer_steps(target: &KeyedTarget<'_>, steps: &[TimerStep]) {
    let bed = TestBed::new(target, "model-based timer sequence");
    let storage = bed.storage("checkpoints", None);
    let retained = RetainedHandles::default();
    let mut model = bed.model();
    let mut first = bed.create(full_range());
    for meta in timer_states() {
        model.register(&mut *first, &meta);
    }
    let mut job = vec![first];
    let mut last: Option<(Model, Vec<Arc<dyn KeyedStateHandle>>)> = None;
    for (number, step) in (1u64..).zip(steps) {
        match step {
            TimerStep::Op(op) => apply(&mut model, &mut job, op),
            TimerStep::Checkpoint { during, savepoint } => {
                let id = CheckpointId::new(number);
                let options = match savepoint {
                    true => CheckpointOptions::savepoint(),
                    false => CheckpointOptions::checkpoint(),
                };
                let mut tasks = Vec::new();
                for instance in &mut job {
                    let factory = bed.ok(storage.stream_factory(id), "opening a stream factory");
                    tasks.push(bed.ok(
                        instance.snapshot(
                            &SnapshotRequest::new(id, number * 1000, options.clone()),
                            Arc::new(factory),
                        ),
                        format_args!("step {number}: synchronous part"),
                    ));
                }
                let at_sync = model.clone();
                for op in during {
                    apply(&mut model, &mut job, op);
                }
                let handles = tasks
                    .into_iter()
                    .map(|task| {
                        let result =
                            bed.ok(task.run(), format_args!("step {number}: asynchronous part"));
                        retained.retain(&bed, &result)
                    })
                    .collect();
                if !savepoint {
                    for instance in &mut job {
                        bed.ok(
                            instance.notify_checkpoint_complete(id),
                            format_args!("step {number}: notifying checkpoint {id}"),
                        );
                    }
                }
                last = Some((at_sync, handles));
            }
            TimerStep::Restore { parallelism } => {
                let Some((at_sync, handles)) = &last else {
                    continue;
                };
                let handles: Vec<Arc<dyn KeyedStateHandle>> = handles
                    .iter()
                    .map(|handle| retained.resolve(&bed, handle))
                    .collect();
                for mut instance in job.drain(..) {
                    bed.ok(instance.close(), "closing a replaced instance");
                }
                for index in 0..*parallelism {
                    let range = range_of(&bed, *parallelism, index);
                    let mut instance = bed.restore(range, &handles);
                    at_sync.check(
                        &mut *instance,
                        &format!("step {number}: instance {index} of {parallelism} ({range})"),
                    );
                    job.push(instance);
                }
                model = at_sync.clone();
            }
        }
    }
    for (index, instance) in job.iter_mut().enumerate() {
        model.check(
            &mut **instance,
            &format!("instance {index} after the last step"),
        );
    }
    // The watermark passes every timestamp: each instance fires all its timers.
    for instance in &mut job {
        for state in [EVENT_TIMERS, PROCESSING_TIMERS] {
            model.poll_timers(&mut **instance, state, i64::MAX, usize::MAX);
        }
    }
    for (index, instance) in job.iter_mut().enumerate() {
        model.check(
            &mut **instance,
            &format!("instance {index}, every timer polled"),
        );
    }
}

/// Random sequences of timer adds, removes and polls, checkpoints and savepoints (with
/// operations between their two parts) and restores, checked against a model of every
/// instance's timers; `cases` sequences. Restores go into 1 to 3 instances when the target
/// declares rescaling, else into 1. A failure shrinks to a short sequence printed with the
/// panic.
pub fn timers_model(target: &KeyedTarget<'_>, cases: u32) {
    let max_parallelism = match target.capabilities.rescaling {
        true => 3,
        false => 1,
    };
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let outcome = runner.run(&timer_steps(max_parallelism), |steps| {
        run_timer_steps(target, &steps);
        Ok(())
    });
    if let Err(err) = outcome {
        panic!("{}: {err}", target.label("model-based timer sequences"));
    }
}
