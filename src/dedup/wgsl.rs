//! The features of `features.rs` on the wgpu backend, as WGSL compute shaders
//! (`shaders/resize.wgsl`, `shaders/hash.wgsl`) dispatched on the very `wgpu::Device` that burn
//! uses: wgpu compiles WGSL itself, which burn's SPIR-V path cannot take as kernel source.

use burn::backend::wgpu::WgpuSetup;
use wgpu::util::DeviceExt;

use super::features::{hash_from_chunks, Features, Packed};

pub struct WgslFeatures {
    device: wgpu::Device,
    queue: wgpu::Queue,
    resize: wgpu::ComputePipeline,
    hash: wgpu::ComputePipeline,
    buffers: Option<Buffers>,
}

/// Everything sized for one frame size, kept while frames keep that size.
struct Buffers {
    key: (usize, usize),
    frame: wgpu::Buffer,
    cells: wgpu::Buffer,
    chunks: wgpu::Buffer,
    staging: wgpu::Buffer,
    resize_group: wgpu::BindGroup,
    hash_group: wgpu::BindGroup,
}

impl WgslFeatures {
    pub fn new(setup: &WgpuSetup) -> Self {
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
            queue: setup.queue.clone(),
            device,
            buffers: None,
        }
    }

    /// Whether one plane set of this size fits the device's largest storage binding.
    pub fn fits(&self, frame: &Packed) -> bool {
        (frame.words.len() * 4) as u64
            <= u64::from(self.device.limits().max_storage_buffer_binding_size)
    }

    pub fn features(&mut self, frame: &Packed) -> Features {
        let (wq, rows, ch) = (frame.words_per_row, frame.rows, frame.cell_rows());
        if self.buffers.as_ref().map(|b| b.key) != Some((wq, rows)) {
            self.buffers = Some(self.buffers_for(wq, rows));
        }
        let b = self.buffers.as_ref().expect("made just above");
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
                timestamp_writes: None,
            });
            pass.set_pipeline(&self.resize);
            pass.set_bind_group(0, &b.resize_group, &[]);
            pass.dispatch_workgroups(wq.div_ceil(64) as u32, ch as u32, 3);
            if frame.has_hash() {
                pass.set_pipeline(&self.hash);
                pass.set_bind_group(0, &b.hash_group, &[]);
                pass.dispatch_workgroups(1, 1, 1);
            }
        }
        let cells_size = (3 * ch * wq * 4) as u64;
        encoder.copy_buffer_to_buffer(&b.cells, 0, &b.staging, 0, cells_size);
        encoder.copy_buffer_to_buffer(&b.chunks, 0, &b.staging, cells_size, 16);
        let submitted = self.queue.submit([encoder.finish()]);
        let slice = b.staging.slice(..);
        slice.map_async(wgpu::MapMode::Read, |_| {});
        // Wait for this submission only, not for model work queued after it by other threads.
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(submitted),
                timeout: None,
            })
            .expect("waiting for the dedup shaders");
        let words: Vec<u32> = bytemuck::cast_slice(&slice.get_mapped_range()).to_vec();
        b.staging.unmap();
        let (cells, chunks) = words.split_at(3 * ch * wq);
        Features {
            pairs_per_row: wq,
            cell_rows: ch,
            cells: cells.to_vec(),
            hash: if frame.has_hash() {
                hash_from_chunks([chunks[0], chunks[1], chunks[2], chunks[3]])
            } else {
                0
            },
        }
    }

    fn buffers_for(&self, wq: usize, rows: usize) -> Buffers {
        let ch = rows / 2;
        let storage = |label: &str, size: usize, usage: wgpu::BufferUsages| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: size as u64,
                usage,
                mapped_at_creation: false,
            })
        };
        use wgpu::BufferUsages as U;
        let frame = storage("dedup frame", 3 * rows * wq * 4, U::STORAGE | U::COPY_DST);
        let cells = storage("dedup cells", 3 * ch * wq * 4, U::STORAGE | U::COPY_SRC);
        let chunks = storage("dedup hash", 16, U::STORAGE | U::COPY_SRC);
        let staging = storage(
            "dedup readback",
            (3 * ch * wq + 4) * 4,
            U::MAP_READ | U::COPY_DST,
        );
        let uniform = |label: &str, values: [u32; 4]| {
            self.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: bytemuck::cast_slice(&values),
                    usage: U::UNIFORM,
                })
        };
        let resize_params = uniform("resize params", [wq as u32, rows as u32, ch as u32, 0]);
        let hash_params = uniform("hash params", [wq as u32, ch as u32, 0, 0]);
        let group = |pipeline: &wgpu::ComputePipeline, buffers: [&wgpu::Buffer; 3]| {
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
        };
        Buffers {
            key: (wq, rows),
            resize_group: group(&self.resize, [&frame, &cells, &resize_params]),
            hash_group: group(&self.hash, [&cells, &chunks, &hash_params]),
            frame,
            cells,
            chunks,
            staging,
        }
    }
}
