"""The stable path at which a provider's block storage volume appears on its host.

* AWS: on Nitro instances EBS volumes are NVMe devices whose serial number is the volume id
  without its dash, and udev links /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_<serial>
  (AWS docs, "Amazon EBS and NVMe"). The /dev/sdX name given at launch is not kept there: the
  kernel names NVMe devices in the order it finds them.
  Xen instances (the t2 family the seed names, among others) have no NVMe: the volume the
  launch mapped as /dev/sdf appears as /dev/xvdf (AWS docs, "Device names on Linux instances"),
  so that name is the second place to look.
* DigitalOcean: /dev/disk/by-id/scsi-0DO_Volume_<volume name> (DigitalOcean docs, "How to Mount
  Volumes").
"""

BY_ID = "/dev/disk/by-id/"


def aws_device(volume_id):
    return BY_ID + "nvme-Amazon_Elastic_Block_Store_" + volume_id.replace("-", "")


def digitalocean_device(volume_name):
    return BY_ID + "scsi-0DO_Volume_" + volume_name


def xen_device(mapped):
    """Where a volume mapped at launch as /dev/sdX (or xvdX) appears on a Xen instance, or None
    for a name that is not of that form."""
    name = mapped.rsplit("/", 1)[-1]
    for prefix in ("sd", "xvd"):
        if name.startswith(prefix) and name[len(prefix):].isalpha():
            return "/dev/xvd" + name[len(prefix):]
    return None
