# %systemd_post daemonset-agent.service daemonset-agent-server.service, written out: on a first
# install apply the presets: Fedora's policy leaves enabling a service to the distribution's
# presets (default: disabled), unlike Debian's. Start them with systemctl enable --now.
if [ "$1" -eq 1 ]; then
	if [ -x /usr/lib/systemd/systemd-update-helper ]; then
		/usr/lib/systemd/systemd-update-helper install-system-units daemonset-agent.service daemonset-agent-server.service || :
	else
		systemctl --no-reload preset daemonset-agent.service daemonset-agent-server.service >/dev/null 2>&1 || :
	fi
fi
