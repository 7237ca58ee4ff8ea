# devops-butler %postun ($1: 0 = erased, 1 = upgraded): reload systemd; after an upgrade restart the
# workers on the new binary if they ran (PartOf=butler.target carries the restart to each). rpm has no
# purge: a changed /etc/butler/butler.toml is kept as butler.toml.rpmsave, and the state in
# /var/lib/butler stays until you remove it (packaging/README.md).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart butler.target >/dev/null 2>&1 || :
    fi
fi
