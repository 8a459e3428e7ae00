# Shared by bench/run.sh and bench/peers.sh (sourced, not run).

# Ends what a private containerd at DIR/containerd.sock leaves behind once containerd itself is
# stopped: its runc shims (they outlive containerd) with their container processes, found by the
# socket path in their command line, and the mounts under DIR (rootfs, netns bind mounts), deepest
# first.
reap_private_containerd() {
  local dir=$1 p cmd m
  for p in /proc/[0-9]*; do
    cmd=$({ tr '\0' ' ' < "$p/cmdline"; } 2>/dev/null) || continue
    case $cmd in
      *containerd-shim*" $dir/containerd.sock "*) pkill -9 -P "${p#/proc/}" 2>/dev/null; kill -9 "${p#/proc/}" 2>/dev/null ;;
    esac
  done
  while read -r m; do umount -l "$m" 2>/dev/null; done < <(
    awk -v d="$dir/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r)
}
