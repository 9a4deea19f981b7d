"""Device registry and connections (local here; SSH and adb plug into connection._CONNECTORS)."""
from .connection import Connection, LocalConnection, connect, cpu_state, pin_affinity, runtime_versions
from .registry import (BACKENDS, CoreCluster, Device, UnknownDeviceError, config_dir, get_device, host_device,
                       list_devices, load_device_file, user_device_dir)

__all__ = ["BACKENDS", "Connection", "CoreCluster", "Device", "LocalConnection", "UnknownDeviceError",
           "config_dir", "connect", "cpu_state", "get_device", "host_device", "list_devices",
           "load_device_file", "pin_affinity", "runtime_versions", "user_device_dir"]
