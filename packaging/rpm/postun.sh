# %systemd_postun_with_restart daemonset-agent.service daemonset-agent-server.service, written out:
# after an upgrade restart whichever was running (the agent adopts its containers). Erase leaves
# /var/lib/daemonset-agent* in place, as Fedora packages keep data; remove them by hand.
if [ "$1" -ge 1 ]; then
	if [ -x /usr/lib/systemd/systemd-update-helper ]; then
		/usr/lib/systemd/systemd-update-helper mark-restart-system-units daemonset-agent.service daemonset-agent-server.service || :
	else
		systemctl daemon-reload >/dev/null 2>&1 || :
		systemctl try-restart daemonset-agent.service daemonset-agent-server.service >/dev/null 2>&1 || :
	fi
else
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
