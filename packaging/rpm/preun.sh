# %systemd_preun daemonset-agent.service daemonset-agent-server.service, written out: on erase
# (not upgrade) disable and stop both. Stopping the agent leaves its containers running.
if [ "$1" -eq 0 ]; then
	if [ -x /usr/lib/systemd/systemd-update-helper ]; then
		/usr/lib/systemd/systemd-update-helper remove-system-units daemonset-agent.service daemonset-agent-server.service || :
	else
		systemctl --no-reload disable --now daemonset-agent.service daemonset-agent-server.service >/dev/null 2>&1 || :
	fi
fi
