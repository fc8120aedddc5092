"""The user a provider's image lets in over SSH, for the inventory's `login_user`.

AWS: the image's documented default user, told by its name or description: Debian's cloud
images log in as `admin` (wiki.debian.org/Cloud/AmazonEC2Image), Ubuntu's as `ubuntu`
(documentation.ubuntu.com/aws). Anything else is unknown (None): the profile's ssh_user must
say it. DigitalOcean droplets log in as root (docs.digitalocean.com, "How to Connect to
Droplets with SSH").
"""

AWS_IMAGE_USERS = (("debian", "admin"), ("ubuntu", "ubuntu"))
DIGITALOCEAN_USER = "root"


def aws_login_user(image):
    """'admin', 'ubuntu' or None for a DescribeImages entry (None when unknown or missing)."""
    text = " ".join(str((image or {}).get(k) or "") for k in ("Name", "Description")).lower()
    for word, user in AWS_IMAGE_USERS:
        if word in text:
            return user
    return None


def aws_login_users(describe_images, image_ids):
    """{image id: login user or None} with one DescribeImages call; an image that is gone
    (deregistered) is simply absent, as the image-id filter returns only what exists."""
    ids = sorted({i for i in image_ids if i})
    if not ids:
        return {}
    found = describe_images(Filters=[{"Name": "image-id", "Values": ids}])
    return {image["ImageId"]: aws_login_user(image) for image in found}
