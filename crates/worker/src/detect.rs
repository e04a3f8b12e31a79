//! What this machine is: CPU, memory, disk and OS through sysinfo; NVIDIA GPUs through NVML,
//! loaded at run time, so the agent builds and runs on machines without a GPU or driver.

use std::path::Path;

use herd_core::{CpuSpec, DeviceSpec, GpuSpec, GpuVendor};
use herd_proto::api::Utilization;
use nvml_wrapper::Nvml;
use sysinfo::{Disks, System};

pub fn detect_machine(data_dir: &Path, gpus: &GpuProbe) -> DeviceSpec {
    let mut system = System::new();
    system.refresh_memory();
    system.refresh_cpu_all();
    let logical_cores = system.cpus().len().max(1) as u32;
    let physical_cores = system.physical_core_count().map_or(logical_cores, |n| n as u32).min(logical_cores);
    DeviceSpec {
        hostname: System::host_name().unwrap_or_else(|| "unknown".into()),
        os: System::long_os_version().or_else(System::name).unwrap_or_else(|| std::env::consts::OS.into()),
        arch: std::env::consts::ARCH.into(),
        cpu: CpuSpec {
            model: system.cpus().first().map(|c| c.brand().trim().to_owned()).unwrap_or_default(),
            physical_cores,
            logical_cores,
        },
        memory_bytes: system.total_memory(),
        disk_bytes: disk_holding(data_dir),
        gpus: gpus.specs(),
    }
}

/// This machine's physical memory.
pub fn machine_memory_bytes() -> u64 {
    let mut system = System::new();
    system.refresh_memory();
    system.total_memory()
}

/// Size of the disk that holds `path` (the longest mount point that prefixes it).
fn disk_holding(path: &Path) -> u64 {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let disks = Disks::new_with_refreshed_list();
    disks
        .list()
        .iter()
        .filter(|d| path.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map_or(0, |d| d.total_space())
}

/// NVML, if a driver is installed. All calls degrade to "no GPUs" rather than failing.
pub struct GpuProbe {
    nvml: Option<Nvml>,
}

impl GpuProbe {
    pub fn load() -> GpuProbe {
        match Nvml::init() {
            Ok(nvml) => GpuProbe { nvml: Some(nvml) },
            Err(error) => {
                tracing::debug!(%error, "NVML unavailable; reporting no NVIDIA GPUs");
                GpuProbe { nvml: None }
            }
        }
    }

    pub fn none() -> GpuProbe {
        GpuProbe { nvml: None }
    }

    pub fn specs(&self) -> Vec<GpuSpec> {
        let Some(nvml) = &self.nvml else { return Vec::new() };
        let driver = nvml.sys_driver_version().ok();
        // NVML encodes CUDA 12.4 as 12040.
        let cuda = nvml.sys_cuda_driver_version().ok().map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10));
        let count = nvml.device_count().unwrap_or(0);
        (0..count)
            .filter_map(|index| {
                let device = nvml.device_by_index(index).ok()?;
                Some(GpuSpec {
                    vendor: GpuVendor::Nvidia,
                    name: device.name().ok()?,
                    uuid: device.uuid().ok()?,
                    vram_bytes: device.memory_info().map(|m| m.total).unwrap_or(0),
                    driver_version: driver.clone(),
                    cuda_version: cuda.clone(),
                })
            })
            .collect()
    }

    pub fn utilization_percent(&self) -> Vec<u32> {
        let Some(nvml) = &self.nvml else { return Vec::new() };
        let count = nvml.device_count().unwrap_or(0);
        (0..count).map(|i| nvml.device_by_index(i).and_then(|d| d.utilization_rates()).map_or(0, |u| u.gpu)).collect()
    }
}

/// Samples machine load for heartbeats. CPU use is measured between two refreshes, so the
/// first sample after start reads 0.
pub struct LoadSampler {
    system: System,
}

impl LoadSampler {
    pub fn new() -> LoadSampler {
        let mut system = System::new();
        system.refresh_cpu_usage();
        LoadSampler { system }
    }

    pub fn sample(&mut self, gpus: &GpuProbe, tasks_running: u32) -> Utilization {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        Utilization {
            cpu_centi_percent: (self.system.global_cpu_usage() * 100.0).clamp(0.0, 10_000.0) as u32,
            memory_used_bytes: self.system.used_memory(),
            gpu_percent: gpus.utilization_percent(),
            tasks_running,
        }
    }
}

impl Default for LoadSampler {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_is_detected_and_valid() {
        let spec = detect_machine(Path::new("/"), &GpuProbe::load());
        spec.validate().unwrap();
        assert!(spec.cpu.logical_cores >= 1);
        assert!(spec.memory_bytes > 0);
        assert!(spec.disk_bytes > 0, "the root disk has a size");
    }
}
