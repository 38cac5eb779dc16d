//! Which burn backend runs the model, on which device. `auto` takes CUDA when an NVIDIA GPU
//! answers, else the best wgpu adapter that is a real GPU (discrete before integrated), else the
//! CPU; every probe here fails softly, with a reason, so that a missing driver is a message and
//! never a crash inside the backend.

use std::fmt;

use burn::backend::cuda::CudaDevice;
use burn::backend::wgpu::WgpuDevice;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Cuda,
    Wgpu,
    Cpu,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Cuda => "cuda",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cpu => "cpu",
        })
    }
}

/// What the user asked for with `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    Auto,
    Only(BackendKind),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceClass {
    DiscreteGpu,
    IntegratedGpu,
    VirtualGpu,
    /// A software rasteriser such as Mesa's lavapipe: works, slowly.
    SoftwareGpu,
    Cpu,
}

impl fmt::Display for DeviceClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceClass::DiscreteGpu => "discrete GPU",
            DeviceClass::IntegratedGpu => "integrated GPU",
            DeviceClass::VirtualGpu => "virtual GPU",
            DeviceClass::SoftwareGpu => "software (CPU) Vulkan",
            DeviceClass::Cpu => "CPU",
        })
    }
}

#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub backend: BackendKind,
    /// The index `--device` takes within this backend.
    pub index: usize,
    pub name: String,
    pub class: DeviceClass,
    /// Total device memory in bytes, where the API tells it.
    pub memory: Option<u64>,
    /// The largest single buffer a kernel may bind, where the API limits it (wgpu).
    pub max_binding: Option<u64>,
}

/// A chosen device, ready to hand to the matching burn backend.
#[derive(Debug, Clone)]
pub enum Selected {
    Cuda(CudaDevice, DeviceInfo),
    Wgpu(WgpuDevice, DeviceInfo),
    Cpu(DeviceInfo),
}

impl Selected {
    pub fn info(&self) -> &DeviceInfo {
        match self {
            Selected::Cuda(_, i) | Selected::Wgpu(_, i) | Selected::Cpu(i) => i,
        }
    }
}

pub fn cpu_info() -> DeviceInfo {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    DeviceInfo {
        backend: BackendKind::Cpu,
        index: 0,
        name: format!("CPU ({threads} threads, ndarray)"),
        class: DeviceClass::Cpu,
        memory: None,
        max_binding: None,
    }
}

/// NVIDIA GPUs the CUDA driver reports, or why there are none.
pub fn cuda_devices() -> Result<Vec<DeviceInfo>, String> {
    use cudarc::driver::result;
    // SAFETY: these only try to dlopen the libraries; nothing is called through them yet.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("no NVIDIA driver (libcuda.so) found".into());
    }
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err("the NVIDIA driver is present but NVRTC (libnvrtc.so, CUDA's runtime compiler) is not: install the CUDA runtime compiler library".into());
    }
    result::init().map_err(|e| format!("the CUDA driver did not initialise: {e}"))?;
    let count = result::device::get_count().map_err(|e| format!("cuDeviceGetCount: {e}"))?;
    if count <= 0 {
        return Err("the CUDA driver reports no GPU".into());
    }
    (0..count)
        .map(|i| {
            let dev = result::device::get(i).map_err(|e| format!("cuDeviceGet({i}): {e}"))?;
            let name = result::device::get_name(dev).unwrap_or_else(|_| "NVIDIA GPU".into());
            // SAFETY: `dev` was returned by cuDeviceGet just above.
            let memory = unsafe { result::device::total_mem(dev) }
                .ok()
                .map(|m| m as u64);
            Ok(DeviceInfo {
                backend: BackendKind::Cuda,
                index: i as usize,
                name,
                class: DeviceClass::DiscreteGpu,
                memory,
                max_binding: None,
            })
        })
        .collect()
}

/// Adapters wgpu can run compute on, each with the `WgpuDevice` that burn opens it by.
pub fn wgpu_devices() -> Vec<(WgpuDevice, DeviceInfo)> {
    use burn::backend::wgpu::graphics::{AutoGraphicsApi, GraphicsApi};
    let backend: wgpu::Backend = AutoGraphicsApi::backend();
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: backend.into(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapters = pollster::block_on(instance.enumerate_adapters(backend.into()));
    // burn numbers adapters within their type, in enumeration order; so do we.
    let mut per_type: std::collections::HashMap<u8, usize> = Default::default();
    let mut out = Vec::new();
    for adapter in adapters {
        let info = adapter.get_info();
        let (key, device, class) = match info.device_type {
            wgpu::DeviceType::DiscreteGpu => (
                0,
                WgpuDevice::DiscreteGpu as fn(usize) -> WgpuDevice,
                DeviceClass::DiscreteGpu,
            ),
            wgpu::DeviceType::IntegratedGpu => (
                1,
                WgpuDevice::IntegratedGpu as fn(usize) -> WgpuDevice,
                DeviceClass::IntegratedGpu,
            ),
            wgpu::DeviceType::VirtualGpu => (
                2,
                WgpuDevice::VirtualGpu as fn(usize) -> WgpuDevice,
                DeviceClass::VirtualGpu,
            ),
            wgpu::DeviceType::Cpu => (
                3,
                (|_| WgpuDevice::Cpu) as fn(usize) -> WgpuDevice,
                DeviceClass::SoftwareGpu,
            ),
            wgpu::DeviceType::Other => continue,
        };
        let nth = per_type.entry(key).or_default();
        let device = device(*nth);
        *nth += 1;
        if key == 3 && *nth > 1 {
            continue; // burn opens only the first CPU adapter
        }
        let limits = adapter.limits();
        out.push((
            device,
            DeviceInfo {
                backend: BackendKind::Wgpu,
                index: 0,
                name: format!("{} ({:?}, {})", info.name, info.backend, info.driver),
                class,
                memory: None,
                max_binding: Some(limits.max_storage_buffer_binding_size as u64),
            },
        ));
    }
    // Best first: discrete, integrated, virtual, software.
    out.sort_by_key(|(_, i)| class_rank(&i.class));
    for (n, (_, info)) in out.iter_mut().enumerate() {
        info.index = n;
    }
    out
}

fn class_rank(class: &DeviceClass) -> u8 {
    match class {
        DeviceClass::DiscreteGpu => 0,
        DeviceClass::IntegratedGpu => 1,
        DeviceClass::VirtualGpu => 2,
        DeviceClass::SoftwareGpu => 3,
        DeviceClass::Cpu => 4,
    }
}

/// Picks the backend and device; the returned string says why, for the log.
pub fn select(choice: BackendChoice, device: Option<usize>) -> Result<(Selected, String)> {
    let unavailable = |backend: BackendKind, reason: String| Error::BackendUnavailable {
        backend: backend.to_string(),
        reason,
    };
    let pick = |count: usize, backend: BackendKind| -> Result<usize> {
        let i = device.unwrap_or(0);
        if i >= count {
            return Err(unavailable(
                backend,
                format!("--device {i} asked, {count} device(s) found (see `upframe devices`)"),
            ));
        }
        Ok(i)
    };
    match choice {
        BackendChoice::Only(BackendKind::Cuda) => {
            let devices = cuda_devices().map_err(|r| unavailable(BackendKind::Cuda, r))?;
            let i = pick(devices.len(), BackendKind::Cuda)?;
            let info = devices[i].clone();
            Ok((
                Selected::Cuda(CudaDevice::new(i), info),
                "--backend cuda".into(),
            ))
        }
        BackendChoice::Only(BackendKind::Wgpu) => {
            let mut devices = wgpu_devices();
            if devices.is_empty() {
                return Err(unavailable(
                    BackendKind::Wgpu,
                    "no Vulkan/Metal/DX12 adapter found (install your GPU's Vulkan driver, or mesa-vulkan-drivers for a software one)".into(),
                ));
            }
            let i = pick(devices.len(), BackendKind::Wgpu)?;
            let (dev, info) = devices.swap_remove(i);
            Ok((Selected::Wgpu(dev, info), "--backend wgpu".into()))
        }
        BackendChoice::Only(BackendKind::Cpu) => {
            Ok((Selected::Cpu(cpu_info()), "--backend cpu".into()))
        }
        BackendChoice::Auto => {
            let cuda_reason = match cuda_devices() {
                Ok(devices) => {
                    let i = pick(devices.len(), BackendKind::Cuda)?;
                    let info = devices[i].clone();
                    return Ok((
                        Selected::Cuda(CudaDevice::new(i), info),
                        "an NVIDIA GPU answered".into(),
                    ));
                }
                Err(reason) => reason,
            };
            let gpus: Vec<_> = wgpu_devices()
                .into_iter()
                .filter(|(_, i)| i.class != DeviceClass::SoftwareGpu)
                .collect();
            if !gpus.is_empty() {
                let i = pick(gpus.len(), BackendKind::Wgpu)?;
                let (dev, info) = gpus[i].clone();
                return Ok((
                    Selected::Wgpu(dev, info),
                    format!("no CUDA ({cuda_reason}); took the best wgpu GPU"),
                ));
            }
            Ok((
                Selected::Cpu(cpu_info()),
                format!("no CUDA ({cuda_reason}) and no hardware wgpu adapter"),
            ))
        }
    }
}

/// The wgpu device and queue behind a burn `WgpuDevice`, for dispatching our own WGSL on it. burn
/// makes its runtime for a device once per process, on first use; the first call here makes it
/// instead, so that the handles are known. None when burn had already opened the device.
pub fn wgpu_setup(device: &WgpuDevice) -> Option<burn::backend::wgpu::WgpuSetup> {
    use burn::backend::wgpu::{graphics::AutoGraphicsApi, init_setup, RuntimeOptions};
    use std::sync::Mutex;
    type Setups = Vec<(WgpuDevice, Option<burn::backend::wgpu::WgpuSetup>)>;
    static SETUPS: Mutex<Setups> = Mutex::new(Vec::new());
    let mut setups = SETUPS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, setup)) = setups.iter().find(|(d, _)| d == device) {
        return setup.clone();
    }
    let made = std::panic::catch_unwind(|| {
        init_setup::<AutoGraphicsApi>(device, RuntimeOptions::default())
    })
    .ok();
    if made.is_none() {
        log::debug!("wgpu device {device:?} was opened before its handles were asked for");
    }
    setups.push((device.clone(), made.clone()));
    made
}

/// Bytes the CubeCL runtime behind a cuda or wgpu device holds (burn and our kernels share it);
/// None for the CPU.
pub fn memory_reserved<D: std::any::Any>(device: &D) -> Option<u64> {
    use cubecl::Runtime;
    let device: &dyn std::any::Any = device;
    let usage = if let Some(d) = device.downcast_ref::<CudaDevice>() {
        cubecl::cuda::CudaRuntime::client(d).memory_usage()
    } else if let Some(d) = device.downcast_ref::<WgpuDevice>() {
        cubecl::wgpu::WgpuRuntime::client(d).memory_usage()
    } else {
        return None;
    };
    usage.ok().map(|m| m.bytes_reserved)
}
