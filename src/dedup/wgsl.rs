//! The features and comparisons of `features.rs` on the wgpu backend, as WGSL compute shaders
//! (`shaders/resize.wgsl`, `shaders/hash.wgsl`, `shaders/compare.wgsl`) dispatched on the very
//! `wgpu::Device` that burn uses: wgpu compiles WGSL itself, which burn's SPIR-V path cannot take
//! as kernel source. Kept frames' cells stay on the device, one buffer per slot (one binding
//! each, as the device's binding size limits); only the hash and a few numbers per kept frame
//! come back.

use std::collections::HashMap;

use burn::backend::wgpu::WgpuSetup;
use wgpu::util::DeviceExt;
use wgpu::BufferUsages as U;

use super::decide::{Decision, Look};
use super::features::{Change, Features, Packed, REGIONS};
use super::slots::Slots;

const GROUP: usize = 256;

pub struct WgslCells {
    device: wgpu::Device,
    queue: wgpu::Queue,
    resize: wgpu::ComputePipeline,
    hash: wgpu::ComputePipeline,
    compare: wgpu::ComputePipeline,
    mean_limit: u32,
    slots: Slots,
    buffers: Option<Buffers>,
    timer: Option<Timer>,
}

/// Timestamps written at the start and end of the shaders' pass, read back with the results:
/// the device time a look takes, which `bench --dedup` reports beside its wall time.
struct Timer {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    nanoseconds_per_tick: f32,
    last: Option<std::time::Duration>,
}

/// Bytes of the two resolved timestamps at the end of the read-back.
const TIMESTAMP_BYTES: u64 = 16;

/// Everything sized for one frame size, kept while frames keep that size.
struct Buffers {
    key: (usize, usize),
    frame: wgpu::Buffer,
    /// One per slot.
    cells: Vec<wgpu::Buffer>,
    /// The hash's region sums.
    regions: wgpu::Buffer,
    /// One per slot: what comparing a new frame with that kept frame found. Separate buffers,
    /// so that the comparisons, each writing its own, need no barrier between them and run side
    /// by side (a shared one made the device finish each before starting the next).
    partials: Vec<wgpu::Buffer>,
    staging: wgpu::Buffer,
    resize_groups: Vec<wgpu::BindGroup>,
    hash_groups: Vec<wgpu::BindGroup>,
    compare_params: wgpu::Buffer,
    /// By (kept slot, new slot), made on first use.
    compare_groups: HashMap<(usize, usize), wgpu::BindGroup>,
}

impl WgslCells {
    /// Room for `window` kept frames; `mean_limit` as `Thresholds::mean_limit`.
    pub fn new(setup: &WgpuSetup, window: usize, mean_limit: u32) -> Self {
        let device = setup.device.clone();
        let pipeline = |name: &str, source: &str| {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(name),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(name),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        Self {
            resize: pipeline("resize", include_str!("../../shaders/resize.wgsl")),
            hash: pipeline("hash", include_str!("../../shaders/hash.wgsl")),
            compare: pipeline("compare", include_str!("../../shaders/compare.wgsl")),
            queue: setup.queue.clone(),
            device,
            mean_limit,
            slots: Slots::new(window),
            buffers: None,
            timer: None,
        }
    }

    /// Times each later look on the device, where the device writes timestamps; false where it
    /// cannot.
    pub fn time_on_device(&mut self) -> bool {
        if !self
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
        {
            return false;
        }
        self.timer = Some(Timer {
            queries: self.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("dedup timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            }),
            resolved: self.storage(
                "dedup timestamps",
                TIMESTAMP_BYTES as usize,
                U::QUERY_RESOLVE | U::COPY_SRC,
            ),
            nanoseconds_per_tick: self.queue.get_timestamp_period(),
            last: None,
        });
        true
    }

    /// The device time of the last look, from its pass's first shader to the end of its last.
    pub fn device_time(&self) -> Option<std::time::Duration> {
        self.timer.as_ref().and_then(|t| t.last)
    }

    /// Whether one plane set of this size fits the device's largest storage binding.
    pub fn fits(&self, frame: &Packed) -> bool {
        (frame.words.len() * 4) as u64 <= self.device.limits().max_storage_buffer_binding_size
    }

    pub fn look(&mut self, frame: &Packed) -> Look {
        let (wq, rows, ch) = (frame.words_per_row, frame.rows, frame.cell_rows());
        if self.buffers.as_ref().map(|b| b.key) != Some((wq, rows)) {
            self.slots.clear();
            self.buffers = Some(self.buffers_for(wq, rows));
        }
        let slot = self.slots.look();
        let kept: Vec<(usize, u64)> = self.slots.kept().collect();
        for &(k, _) in &kept {
            self.compare_group(k, slot);
        }
        let b = self.buffers.as_ref().expect("made just above");
        let (bw, bh) = Change::blocks_of(wq, ch);
        let cubes = (bw * bh).div_ceil(GROUP);
        self.queue
            .write_buffer(&b.frame, 0, bytemuck::cast_slice(&frame.words));
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("dedup"),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("dedup"),
                timestamp_writes: self
                    .timer
                    .as_ref()
                    .map(|t| wgpu::ComputePassTimestampWrites {
                        query_set: &t.queries,
                        beginning_of_pass_write_index: Some(0),
                        end_of_pass_write_index: Some(1),
                    }),
            });
            pass.set_pipeline(&self.resize);
            pass.set_bind_group(0, &b.resize_groups[slot], &[]);
            pass.dispatch_workgroups(wq.div_ceil(64) as u32, ch as u32, 3);
            if frame.has_hash() {
                pass.set_pipeline(&self.hash);
                pass.set_bind_group(0, &b.hash_groups[slot], &[]);
                pass.dispatch_workgroups(REGIONS as u32, 1, 1);
            }
            pass.set_pipeline(&self.compare);
            for &(k, _) in &kept {
                pass.set_bind_group(0, &b.compare_groups[&(k, slot)], &[]);
                pass.dispatch_workgroups(cubes as u32, 1, 1);
            }
        }
        encoder.copy_buffer_to_buffer(&b.regions, 0, &b.staging, 0, 4 * REGIONS as u64);
        let partials_size = (cubes * 2 * 4) as u64;
        for &(k, _) in &kept {
            encoder.copy_buffer_to_buffer(
                &b.partials[k],
                0,
                &b.staging,
                4 * REGIONS as u64 + k as u64 * partials_size,
                partials_size,
            );
        }
        let timestamps_at = b.staging.size() - TIMESTAMP_BYTES;
        if let Some(t) = &self.timer {
            encoder.resolve_query_set(&t.queries, 0..2, &t.resolved, 0);
            encoder.copy_buffer_to_buffer(
                &t.resolved,
                0,
                &b.staging,
                timestamps_at,
                TIMESTAMP_BYTES,
            );
        }
        let words = self.read_back(encoder, &b.staging);
        if let Some(t) = &mut self.timer {
            let at = timestamps_at as usize / 4;
            let tick = |i: usize| u64::from(words[at + i]) | u64::from(words[at + i + 1]) << 32;
            let ticks = tick(2).saturating_sub(tick(0));
            t.last = Some(std::time::Duration::from_nanos(
                (ticks as f64 * f64::from(t.nanoseconds_per_tick)) as u64,
            ));
        }
        Look::from_read_back(&words, frame.has_hash(), kept, cubes, bw * bh)
    }

    pub fn settle(&mut self, index: u64, decision: &Decision) {
        self.slots.settle(index, decision);
    }

    /// A frame's features computed by the shaders and read back: what tests compare with the
    /// definition. Nothing is kept.
    pub fn features(&mut self, frame: &Packed) -> Features {
        let look = self.look(frame);
        let slot = self.slots.looking().expect("looked at just above");
        self.slots.clear();
        let b = self.buffers.as_ref().expect("looked at a frame");
        let size = b.cells[slot].size();
        let staging = self.storage(
            "dedup cells readback",
            size as usize,
            U::MAP_READ | U::COPY_DST,
        );
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        encoder.copy_buffer_to_buffer(&b.cells[slot], 0, &staging, 0, size);
        Features {
            pairs_per_row: frame.words_per_row,
            cell_rows: frame.cell_rows(),
            cells: self.read_back(encoder, &staging),
            hash: look.hash,
        }
    }

    fn read_back(&self, encoder: wgpu::CommandEncoder, staging: &wgpu::Buffer) -> Vec<u32> {
        self.queue.submit([encoder.finish()]);
        let slice = staging.slice(..);
        let (mapped, on_mapped) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |result| {
            let _ = mapped.send(result);
        });
        // Polled, not waited for: a blocking wait holds the device's fence lock until the queue
        // reaches this submission, and no other thread can submit meanwhile, so the model's
        // next work would queue up behind every read-back and the GPU would drain each time.
        loop {
            self.device
                .poll(wgpu::PollType::Poll)
                .expect("polling the dedup shaders");
            match on_mapped.try_recv() {
                Ok(result) => break result.expect("mapping the dedup read-back"),
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    std::thread::sleep(std::time::Duration::from_micros(50))
                }
                Err(e) => panic!("the dedup read-back was dropped: {e}"),
            }
        }
        let words = bytemuck::cast_slice(&slice.get_mapped_range()).to_vec();
        staging.unmap();
        words
    }

    fn storage(&self, label: &str, size: usize, usage: U) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: size as u64,
            usage,
            mapped_at_creation: false,
        })
    }

    fn uniform(&self, label: &str, values: [u32; 4]) -> wgpu::Buffer {
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(&values),
                usage: U::UNIFORM,
            })
    }

    fn group(
        &self,
        pipeline: &wgpu::ComputePipeline,
        buffers: &[&wgpu::Buffer],
    ) -> wgpu::BindGroup {
        let entries: Vec<_> = buffers
            .iter()
            .enumerate()
            .map(|(i, buffer)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: buffer.as_entire_binding(),
            })
            .collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        })
    }

    fn compare_group(&mut self, kept: usize, new: usize) {
        let b = self.buffers.as_ref().expect("made before");
        if b.compare_groups.contains_key(&(kept, new)) {
            return;
        }
        let group = self.group(
            &self.compare,
            &[
                &b.cells[kept],
                &b.cells[new],
                &b.partials[kept],
                &b.compare_params,
            ],
        );
        let b = self.buffers.as_mut().expect("made before");
        b.compare_groups.insert((kept, new), group);
    }

    fn buffers_for(&self, wq: usize, rows: usize) -> Buffers {
        let ch = rows / 2;
        let slots = self.slots.count();
        let (bw, bh) = Change::blocks_of(wq, ch);
        let cubes = (bw * bh).div_ceil(GROUP);
        let frame = self.storage("dedup frame", 3 * rows * wq * 4, U::STORAGE | U::COPY_DST);
        let cells: Vec<_> = (0..slots)
            .map(|_| self.storage("dedup cells", 3 * ch * wq * 4, U::STORAGE | U::COPY_SRC))
            .collect();
        let regions = self.storage("dedup hash regions", 4 * REGIONS, U::STORAGE | U::COPY_SRC);
        let partials = (0..slots)
            .map(|_| self.storage("dedup partials", cubes * 2 * 4, U::STORAGE | U::COPY_SRC))
            .collect();
        let staging = self.storage(
            "dedup readback",
            (REGIONS + slots * cubes * 2) * 4 + TIMESTAMP_BYTES as usize,
            U::MAP_READ | U::COPY_DST,
        );
        let resize_params = self.uniform("resize params", [wq as u32, rows as u32, ch as u32, 0]);
        let hash_params = self.uniform("hash params", [wq as u32, ch as u32, 0, 0]);
        let compare_params =
            self.uniform("compare params", [wq as u32, ch as u32, self.mean_limit, 0]);
        Buffers {
            key: (wq, rows),
            resize_groups: cells
                .iter()
                .map(|c| self.group(&self.resize, &[&frame, c, &resize_params]))
                .collect(),
            hash_groups: cells
                .iter()
                .map(|c| self.group(&self.hash, &[c, &regions, &hash_params]))
                .collect(),
            compare_params,
            compare_groups: HashMap::new(),
            frame,
            cells,
            regions,
            partials,
            staging,
        }
    }
}
