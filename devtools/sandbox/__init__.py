"""A local stand-in for cloud machines: sandbox hosts in network namespaces, reachable over SSH.

hosts.SandboxHosts boots hosts; hypervisor.Hypervisor boots one for each instance the AWS
emulator (moto) runs; fake_docker is the container runtime stand-in installed on every host.
"""
