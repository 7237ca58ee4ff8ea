# devops-butler %post ($1: 1 = first install, 2 = upgrade): what the .deb's postinst does.
# The system user first (the units run as it), then its directories, then systemd. Without a running
# systemd (an image build, a chroot) only the enablement symlink is made and nothing is started.
systemd-sysusers /usr/lib/sysusers.d/butler.conf || :
if [ -d /run/systemd/system ]; then
    systemd-tmpfiles --create /usr/lib/tmpfiles.d/butler.conf >/dev/null 2>&1 || :
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    # butler.target Wants= the four workers: enabling and starting it starts them all.
    systemctl enable butler.target >/dev/null 2>&1 || :
    if [ -d /run/systemd/system ]; then
        systemctl start butler.target >/dev/null 2>&1 || :
    fi
fi
