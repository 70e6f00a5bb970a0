//! A call's GPU work recorded once per input shape, then replayed. Every kernel launched through burn and
//! cubecl costs the CPU tens of microseconds (its arguments, its output's allocation, a bind group): ~1.6 ms
//! for a forward pass's 44 dispatches in Chrome on the H100, as long as the GPU's own work on a short text.
//! cubecl records one run's dispatches with their bind groups; a replay encodes them again, over inputs
//! written in place and into the same output.
//!
//! A shape is recorded the second time a pipeline sees it (the first call may be its only one), and that
//! call's result is the recording's first replay.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use burn::backend::{BackendTensor, DispatchDevice, DispatchTensorKind};
use burn::tensor::kind::Basic;
use burn::tensor::{Device, Int, Tensor, TensorData};
use cubecl::client::{Client, Graph};

use crate::backend::Reading;
use crate::error::Result;
use crate::model::{Batch, BatchData};
use crate::ops::KernelShape;

/// Recordings one pipeline keeps, the least recently replayed dropped first: each holds on to the device
/// memory its run used (its activations' pages stay reserved) until it is dropped.
const MAX_GRAPHS: usize = 4;
/// Calls of more tokens run as they come: their kernels take long enough to hide the launches.
const MAX_TOKENS: usize = 1024;
/// Shapes remembered as seen once (or as not recordable).
const MAX_SEEN: usize = 64;

/// The length a batch of `rows` sequences of up to `seq` tokens is padded to: where calls are recorded,
/// rounded up to a multiple of 16 tokens (past 128, of an eighth of the next power of two), at most `max`,
/// so that texts of nearby lengths share a recording; a GPU runs a few more tokens in far less time than
/// it takes to launch the kernels. Elsewhere `seq`.
pub fn padded_len(device: &Device, rows: usize, seq: usize, max: usize) -> usize {
    let len = bucket(seq, max);
    match rows * len <= MAX_TOKENS && records(device) {
        true => len,
        false => seq,
    }
}

fn bucket(seq: usize, max: usize) -> usize {
    let step = (seq.next_power_of_two() / 8).max(16);
    (seq.div_ceil(step) * step).min(max).max(seq)
}

/// Whether calls on `device` are recorded.
fn records(device: &Device) -> bool {
    match device.as_dispatch() {
        DispatchDevice::Cube(device) => recorded_on(&device.client()),
        _ => false,
    }
}

/// Whether calls are recorded on this GPU: where its kernels are tiled. CPU-backed adapters (serial
/// kernels) run the kernels far longer than it takes to launch them, and recording runs a call twice.
fn recorded_on(client: &Client) -> bool {
    KernelShape::of(client) != KernelShape::Serial
}

/// What one call computes, and on what shape: equal keys run the same kernels on the same sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    name: &'static str,
    /// `[batch, seq]`.
    dims: [usize; 2],
    options: [usize; 2],
}

/// The tensors a recorded run reads from the host: uploaded once per recording, and written over, in
/// place, before each replay.
pub trait Inputs: Send + 'static {
    /// Their values on the host.
    type Data;
    /// `[batch, seq]` of `data`.
    fn dims(data: &Self::Data) -> [usize; 2];
    fn upload(data: &Self::Data, device: &Device) -> Self;
    /// Writes `data` (of the same shapes) over these tensors.
    fn write(&self, data: &Self::Data);
    /// The GPU they are on; `None` on the CPU, where nothing is recorded.
    fn client(&self) -> Option<Client>;
}

impl Inputs for Batch {
    type Data = BatchData;

    fn dims(data: &BatchData) -> [usize; 2] {
        data.dims()
    }

    fn upload(data: &BatchData, device: &Device) -> Self {
        Batch::upload(data, device)
    }

    fn write(&self, data: &BatchData) {
        write(&self.input_ids, &data.input_ids);
        write(&self.token_type_ids, &data.token_type_ids);
        write(&self.attention_mask, &data.attention_mask);
    }

    fn client(&self) -> Option<Client> {
        cube(&self.attention_mask).map(|(client, _)| client)
    }
}

/// A batch and, for fill-mask, the positions of its masks.
pub struct Masked {
    pub batch: Batch,
    pub positions: Tensor<1, Int>,
}

impl Inputs for Masked {
    type Data = (BatchData, TensorData);

    fn dims((batch, _): &Self::Data) -> [usize; 2] {
        batch.dims()
    }

    fn upload((batch, positions): &Self::Data, device: &Device) -> Self {
        Self {
            batch: Batch::upload(batch, device),
            positions: Tensor::from_data(positions.clone(), device),
        }
    }

    fn write(&self, (batch, positions): &Self::Data) {
        self.batch.write(batch);
        write(&self.positions, positions);
    }

    fn client(&self) -> Option<Client> {
        self.batch.client()
    }
}

/// A GPU tensor's client and handle.
fn cube<const D: usize, K: Basic>(
    tensor: &Tensor<D, K>,
) -> Option<(Client, cubecl::server::Handle)> {
    match tensor.clone().into_dispatch().kind {
        DispatchTensorKind::Cube(BackendTensor::Float(t) | BackendTensor::Int(t)) => {
            Some((t.client, t.handle))
        }
        _ => None,
    }
}

/// Writes `data` over `tensor`'s buffer, converted to the tensor's element type.
fn write<const D: usize, K: Basic>(tensor: &Tensor<D, K>, data: &TensorData) {
    if let Some((client, handle)) = cube(tensor) {
        let (bytes, _, _) = data.clone().convert_dtype(tensor.dtype()).into_parts();
        client.write(&handle, bytes);
    }
}

/// One pipeline's recordings.
#[derive(Default)]
pub struct Replays {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Least recently replayed first.
    recordings: Vec<Recording>,
    /// Shapes seen once, and whether recording them failed (then they are never tried again).
    seen: Vec<(Key, bool)>,
    replayed: usize,
}

struct Recording {
    key: Key,
    /// The [`Inputs`] it reads.
    inputs: Box<dyn Any + Send>,
    output: Tensor<2>,
    graph: Graph,
    /// Replayed and its output's read not yet queued: the next replay would overwrite the output first.
    busy: Arc<AtomicBool>,
    /// Replays go to the stream the recording was made on; natively each thread has its own.
    thread: ThreadId,
}

/// A call's result on the device. From a replay it is the recording's own output, which the recording's
/// next replay overwrites: until its read is queued the shape runs without it.
pub struct Output {
    tensor: Tensor<2>,
    busy: Option<Busy>,
}

struct Busy(Arc<AtomicBool>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Output {
    /// Begins reading the values back ([`Reading`]). Once the copy is queued, ahead of anything launched
    /// later, the recording may replay again.
    pub fn start_read(self) -> Pending {
        let reading = Reading::start(self.tensor);
        let busy = self.busy.filter(|_| !reading.is_queued());
        Pending {
            reading,
            _busy: busy,
        }
    }

    /// The values, read back.
    pub async fn read(self) -> Result<Vec<f32>> {
        self.start_read().values().await
    }
}

/// A result whose read has begun.
pub struct Pending {
    reading: Reading,
    _busy: Option<Busy>,
}

impl Pending {
    /// Whether the copy is queued ([`Reading::is_queued`]).
    pub fn is_queued(&self) -> bool {
        self.reading.is_queued()
    }

    pub async fn values(self) -> Result<Vec<f32>> {
        let Pending { reading, _busy } = self;
        super::values(reading).await
    }
}

impl Replays {
    /// `work` on `data`'s values: replayed where it was recorded on this shape, recorded the second time
    /// it comes (on GPUs only), run as it comes otherwise. `name` and `options` (pooling, normalising,
    /// top-k: whatever changes the kernels) tell one call's work from another's.
    pub fn run<I: Inputs>(
        &self,
        name: &'static str,
        options: [usize; 2],
        data: &I::Data,
        device: &Device,
        work: impl Fn(&I) -> Tensor<2>,
    ) -> Output {
        let key = Key {
            name,
            dims: I::dims(data),
            options,
        };
        let once = || Output {
            tensor: work(&I::upload(data, device)),
            busy: None,
        };
        if key.dims[0] * key.dims[1] > MAX_TOKENS {
            return once();
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = state.recordings.iter().position(|r| r.key == key) {
            return state.replay::<I>(i, data).unwrap_or_else(once);
        }
        match state.seen.iter().position(|(seen, _)| *seen == key) {
            None => {
                if state.seen.len() == MAX_SEEN {
                    state.seen.remove(0);
                }
                state.seen.push((key, false));
                once()
            }
            Some(i) if state.seen[i].1 => once(),
            Some(i) => match record(key, data, device, &work) {
                Some(recording) => {
                    state.seen.remove(i);
                    if state.recordings.len() == MAX_GRAPHS {
                        state.recordings.remove(0);
                    }
                    state.recordings.push(recording);
                    let last = state.recordings.len() - 1;
                    state.replay::<I>(last, data).unwrap_or_else(once)
                }
                None => {
                    state.seen[i].1 = true;
                    once()
                }
            },
        }
    }

    /// How many calls were replayed.
    pub fn replayed(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replayed
    }
}

impl State {
    /// Recording `i` replayed over `data`, unless the read of its last output is not yet queued or it
    /// belongs to another thread's stream; dropped if the replay fails.
    fn replay<I: Inputs>(&mut self, i: usize, data: &I::Data) -> Option<Output> {
        let recording = &self.recordings[i];
        if recording.busy.load(Ordering::Acquire) || recording.thread != std::thread::current().id()
        {
            return None;
        }
        let inputs = recording.inputs.downcast_ref::<I>()?;
        inputs.write(data);
        // SAFETY: what the recorded kernels read and write outlives the replay: the weights belong to the
        // pipeline that owns these recordings, the inputs and output to the recording, and the pages of
        // the run's other tensors stay reserved while the graph lives (cubecl guards every page a recording
        // touched). The replay goes to the stream it was recorded on (same thread), which orders it after
        // the writes above and after the copy of the output's last read; `busy` holds it until that copy
        // is queued.
        match unsafe { recording.graph.replay() } {
            Ok(()) => {
                let recording = self.recordings.remove(i);
                recording.busy.store(true, Ordering::Release);
                let output = Output {
                    tensor: recording.output.clone(),
                    busy: Some(Busy(recording.busy.clone())),
                };
                self.recordings.push(recording);
                self.replayed += 1;
                Some(output)
            }
            Err(_) => {
                self.recordings.remove(i);
                None
            }
        }
    }
}

/// `work` recorded on `data`'s shape (`None` if it is not recorded here: the CPU, a CPU-backed adapter, or a
/// run cubecl refuses to record). A run first, dropped unread, leaves cubecl's pools holding what the
/// recording reuses: no memory may be added while it records.
fn record<I: Inputs>(
    key: Key,
    data: &I::Data,
    device: &Device,
    work: &impl Fn(&I) -> Tensor<2>,
) -> Option<Recording> {
    // Uploaded before the recording starts: a recording holds no copy from the host.
    let inputs = I::upload(data, device);
    let client = inputs.client()?;
    if !recorded_on(&client) {
        return None;
    }
    client.graph_prepare().ok()?;
    drop(work(&inputs));
    if client.start_capture().is_err() {
        // Ends the capture that was only prepared.
        let _ = client.stop_capture();
        return None;
    }
    let output = work(&inputs);
    let graph = client.stop_capture().ok()?;
    Some(Recording {
        key,
        inputs: Box::new(inputs),
        output,
        graph,
        busy: Arc::new(AtomicBool::new(false)),
        thread: std::thread::current().id(),
    })
}

#[cfg(test)]
mod tests {
    use super::bucket;

    #[test]
    fn lengths_round_up_to_their_bucket() {
        let lengths = [1, 9, 16, 17, 40, 128, 129, 200, 257, 300, 511];
        let buckets = lengths.map(|seq| bucket(seq, 512));
        assert_eq!(buckets, [16, 16, 16, 32, 48, 128, 160, 224, 320, 320, 512]);
        // Never past the model's positions, never below the text.
        assert_eq!(bucket(500, 510), 510);
        assert_eq!(bucket(20, 8), 20);
    }
}
