# devops-butler %preun ($1: 0 = erase, 1 = upgrade): on erase, stop the workers (PartOf=butler.target
# carries the stop to each) and disable the target, as the .deb's prerm and postrm do. On upgrade
# nothing stops here: %postun restarts the units once the new files are in place.
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl stop butler.target >/dev/null 2>&1 || :
    fi
    systemctl disable butler.target >/dev/null 2>&1 || :
fi
