#!/usr/bin/env bash
# Install tradeguard's secured mosquitto setup on a Debian host (docs/deployment.md).
#
#   sudo systemd/mosquitto/install.sh [options] STRATEGY_ID...
#
# Idempotent: run it again with the full lists whenever strategies, operators or
# buttons change. It
#   * installs tradeguard.conf into /etc/mosquitto/conf.d/ (TLS listener on 8883,
#     loopback listener on 1883, no anonymous access, passwords, ACL, persistence);
#   * adds a mosquitto user for the daemon (two: USER and USER-control, see below),
#     every operator (the tradeguard CLI), the phone, Home Assistant, every button
#     and every strategy (username = strategy id) that is not in the password file
#     yet, with a random password kept in /etc/mosquitto/tradeguard/passwords/USER
#     (root only: hand them out, then delete them if you like; the CLI's config may
#     point at an operator's); existing users keep their password unless named with
#     --rotate;
#   * copies the daemon's password to /etc/tradeguard/credentials/mqtt-password
#     (the unit's LoadCredential= source) unless that file exists already;
#   * renders acl.template into /etc/mosquitto/tradeguard/acl;
#   * with --make-certs, creates a private CA and a server certificate if they are
#     missing (otherwise put your own files where tradeguard.conf says);
#   * restarts mosquitto when its config changed, else reloads it (SIGHUP re-reads
#     the password file and the ACL).
#
# The broker takes each client's id from its login (use_username_as_clientid), so
# that no other user can take over the daemon's session; one login is one
# connection. The daemon holds two connections, its data plane (intents) as USER
# and its control plane (kill and approval commands) as USER-control: both logins
# have the same password (the one credential file serves both) and the same ACL,
# --rotate of either rotates both, and --prune keeps both. The CLI must not log in
# as the daemon (it would take over the daemon's connection): it logs in as an
# operator, one login per person or tool connected at the same time.
#
# Options:
#   --prefix P            topic prefix, mqtt.topic_prefix (default: tradeguard)
#   --daemon USER         the daemon's username, at most 24 characters (default:
#                         tradeguard); USER-control is its control-plane login
#   --operator USER       a login for the tradeguard CLI (and mosquitto_sub): may send
#                         kill and approval commands and read state and audit, as the
#                         phone may (repeatable; default: operator)
#   --phone USER          the phone dashboard's username (default: phone)
#   --homeassistant USER  Home Assistant's username (default: homeassistant)
#   --discovery-prefix D  Home Assistant discovery prefix (default: homeassistant)
#   --trigger USER=TOPIC  a button user that may publish only TOPIC, which the daemon
#                         reads (repeatable; default: button=zigbee2mqtt/panic_button;
#                         --no-triggers for none)
#   --no-triggers         no button users
#   --make-certs NAMES    comma-separated DNS names / IP addresses clients use to reach
#                         the broker, e.g. broker.lan,192.168.1.10 (localhost and
#                         127.0.0.1 are always added)
#   --extra-acl FILE      append FILE to the ACL verbatim (other clients of the same
#                         broker, e.g. zigbee2mqtt; they must not get tradeguard topics)
#   --rotate USER         give USER a new random password (repeatable)
#   --root DIR            install below DIR instead of / (packaging, tests); never
#                         touches the running mosquitto
#   --prune               remove users from the password file that are not named now
#                         (a strategy that was dropped from the list); users with a
#                         `user NAME` line in the --extra-acl file are kept
#   --no-restart          do not restart or reload mosquitto
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
prefix=tradeguard
daemon_user=tradeguard
operators=()
default_operators=1
phone_user=phone
ha_user=homeassistant
discovery=homeassistant
triggers=()
default_triggers=1
cert_names=""
rotate=()
root=""
restart=1
prune=0
extra_acl=""
strategies=()

die() {
	echo "install.sh: error: $*" >&2
	exit 2
}

need_value() {
	[[ $# -ge 2 && -n $2 ]] || die "$1 needs a value"
}

while [[ $# -gt 0 ]]; do
	case $1 in
	--prefix) need_value "$@"; prefix=$2; shift 2 ;;
	--daemon) need_value "$@"; daemon_user=$2; shift 2 ;;
	--operator) need_value "$@"; operators+=("$2"); default_operators=0; shift 2 ;;
	--phone) need_value "$@"; phone_user=$2; shift 2 ;;
	--homeassistant) need_value "$@"; ha_user=$2; shift 2 ;;
	--discovery-prefix) need_value "$@"; discovery=$2; shift 2 ;;
	--trigger) need_value "$@"; triggers+=("$2"); default_triggers=0; shift 2 ;;
	--no-triggers) default_triggers=0; shift ;;
	--make-certs) need_value "$@"; cert_names=$2; shift 2 ;;
	--rotate) need_value "$@"; rotate+=("$2"); shift 2 ;;
	--extra-acl) need_value "$@"; extra_acl=$2; shift 2 ;;
	--root) need_value "$@"; root=${2%/}; restart=0; shift 2 ;;
	--no-restart) restart=0; shift ;;
	--prune) prune=1; shift ;;
	-h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	--) shift; strategies+=("$@"); break ;;
	-*) die "unknown option $1 (see --help)" ;;
	*) strategies+=("$1"); shift ;;
	esac
done
if [[ $default_triggers == 1 ]]; then
	triggers=("button=zigbee2mqtt/panic_button")
fi
if [[ $default_operators == 1 ]]; then
	operators=(operator)
fi

# --- validate -----------------------------------------------------------------
name_re='^[A-Za-z0-9_-]{1,32}$'
[[ $prefix =~ ^[A-Za-z0-9_./-]{1,64}$ ]] || die "--prefix: 1-64 characters of [A-Za-z0-9_./-]"
[[ $discovery =~ ^[A-Za-z0-9_./-]{1,64}$ ]] || die "--discovery-prefix: 1-64 characters of [A-Za-z0-9_./-]"
[[ ${#strategies[@]} -gt 0 ]] || die "name at least one strategy id (the strategies' usernames)"
declare -A seen=()
claim() { # claim USER ROLE: every username has exactly one role
	[[ $1 =~ $name_re ]] || die "$2 '$1': a username is 1-32 characters of [A-Za-z0-9_-]"
	[[ -z ${seen[$1]:-} ]] || die "username '$1' is used for both ${seen[$1]} and $2"
	seen[$1]=$2
}
(( ${#daemon_user} <= 24 )) || die "--daemon '$daemon_user': at most 24 characters (it gets a -control login too)"
claim "$daemon_user" daemon
control_user=$daemon_user-control
claim "$control_user" "daemon control plane"
for user in "${operators[@]}"; do
	claim "$user" operator
done
claim "$phone_user" phone
claim "$ha_user" homeassistant
trigger_users=()
trigger_topics=()
for trigger in "${triggers[@]}"; do
	[[ $trigger == *=* ]] || die "--trigger '$trigger': expected USER=TOPIC"
	user=${trigger%%=*}
	topic=${trigger#*=}
	claim "$user" "button"
	[[ $topic =~ ^[^#+[:space:]]{1,256}$ ]] || die "--trigger '$trigger': the topic must not be empty or hold spaces, + or #"
	# Inside the prefix a button may only use the kill command topic (plain-text PRESS).
	if [[ $topic == "$prefix"/* && $topic != "$prefix/v1/kill/command" ]]; then
		die "--trigger '$trigger': inside $prefix/ a button may only publish $prefix/v1/kill/command"
	fi
	trigger_users+=("$user")
	trigger_topics+=("$topic")
done
for sid in "${strategies[@]}"; do
	claim "$sid" "strategy"
done
[[ -z $extra_acl || -r $extra_acl ]] || die "--extra-acl: cannot read $extra_acl"
for n in "${!rotate[@]}"; do
	[[ -n ${seen[${rotate[n]}]:-} ]] || die "--rotate '${rotate[n]}': not one of the users being installed"
	# The daemon's two logins share one password: rotating either rotates both.
	[[ ${rotate[n]} != "$control_user" ]] || rotate[n]=$daemon_user
done

command -v mosquitto_passwd >/dev/null || die "mosquitto_passwd not found: apt-get install -y mosquitto"
command -v openssl >/dev/null || die "openssl not found: apt-get install -y openssl"
if [[ -z $root && $(id -u) != 0 ]]; then
	die "run as root (or with --root DIR to stage the files somewhere else)"
fi

# --- paths --------------------------------------------------------------------
conf_dir=$root/etc/mosquitto/conf.d
tg_dir=$root/etc/mosquitto/tradeguard
passwords_dir=$tg_dir/passwords
passwd_file=$tg_dir/passwd
acl_file=$tg_dir/acl
ca_dir=$tg_dir/ca
ca_cert=$root/etc/mosquitto/ca_certificates/tradeguard-ca.crt
server_cert=$root/etc/mosquitto/certs/tradeguard-server.crt
server_key=$root/etc/mosquitto/certs/tradeguard-server.key
credential=$root/etc/tradeguard/credentials/mqtt-password

# mosquitto 2 reads its files after dropping to the mosquitto user: group-readable.
group=$(id -gn)
if [[ $(id -u) == 0 ]] && getent group mosquitto >/dev/null; then
	group=mosquitto
fi
umask 077
install -d -m 0755 "$conf_dir" "$root/etc/mosquitto/certs" "$root/etc/mosquitto/ca_certificates"
install -d -m 0750 -g "$group" "$tg_dir"
install -d -m 0700 "$passwords_dir" "$ca_dir"
install -d -m 0755 "$root/etc/tradeguard"
install -d -m 0700 "$root/etc/tradeguard/credentials"

# --- broker config ---------------------------------------------------------------
conf_changed=0
if ! cmp -s "$here/tradeguard.conf" "$conf_dir/tradeguard.conf"; then
	install -m 0644 "$here/tradeguard.conf" "$conf_dir/tradeguard.conf"
	conf_changed=1
	echo "installed $conf_dir/tradeguard.conf"
fi

# --- users ----------------------------------------------------------------------
[[ -e $passwd_file ]] || install -m 0640 -g "$group" /dev/null "$passwd_file"

has_user() {
	grep -q "^$1:" "$passwd_file"
}

is_rotated() {
	local user
	for user in "${rotate[@]}"; do
		[[ $user == "$1" ]] && return 0
	done
	return 1
}

set_password() { # set_password USER PASSWORD: in the password file and passwords/USER
	local user=$1 password=$2 secret_file=$passwords_dir/$1 output
	printf '%s\n' "$password" >"$secret_file"
	chmod 0600 "$secret_file"
	# The password goes through stdin, never the command line (visible in ps).
	if ! output=$(printf '%s\n%s\n' "$password" "$password" | mosquitto_passwd "$passwd_file" "$user" 2>&1); then
		die "mosquitto_passwd failed for $user: $output"
	fi
	echo "user $user: password in $secret_file"
}

ensure_user() { # ensure_user USER [SEED_FILE]: add USER unless present (or rotated)
	local user=$1 seed=${2:-} secret_file=$passwords_dir/$1
	if has_user "$user" && ! is_rotated "$user"; then
		return
	fi
	if ! is_rotated "$user" && [[ -s $secret_file ]]; then
		set_password "$user" "$(<"$secret_file")"
	elif ! is_rotated "$user" && [[ -n $seed && -s $seed ]]; then
		set_password "$user" "$(<"$seed")"
	else
		set_password "$user" "$(openssl rand -hex 16)"
	fi
}

# The daemon's control-plane login gets the daemon's password whenever that is set
# (new or rotated) and when it is missing (an install from before it existed).
ensure_control_user() {
	local source=$passwords_dir/$daemon_user
	if has_user "$control_user" && [[ $daemon_set == 0 ]]; then
		return
	fi
	[[ -s $source ]] || source=$credential
	[[ -s $source ]] || die "cannot give $control_user the password of $daemon_user: neither" \
		"$passwords_dir/$daemon_user nor $credential holds it; re-run with --rotate $daemon_user"
	set_password "$control_user" "$(<"$source")"
}

daemon_set=0
if ! has_user "$daemon_user" || is_rotated "$daemon_user"; then
	daemon_set=1
fi
ensure_user "$daemon_user" "$credential"
ensure_control_user
for user in "${operators[@]}"; do
	ensure_user "$user"
done
ensure_user "$phone_user"
ensure_user "$ha_user"
for user in "${trigger_users[@]}"; do
	ensure_user "$user"
done
for sid in "${strategies[@]}"; do
	ensure_user "$sid"
done
if [[ $prune == 1 ]]; then
	mapfile -t present < <(cut -d: -f1 "$passwd_file")
	for user in "${present[@]}"; do
		if [[ -n $extra_acl ]] && grep -qx "user $user" "$extra_acl"; then
			continue # a user of the extra ACL, managed by hand
		fi
		if [[ -n $user && -z ${seen[$user]:-} ]]; then
			mosquitto_passwd -D "$passwd_file" "$user"
			rm -f "${passwords_dir:?}/$user"
			echo "user $user removed"
		fi
	done
fi
chgrp "$group" "$passwd_file"
chmod 0640 "$passwd_file"

if [[ ! -s $credential ]] || is_rotated "$daemon_user"; then
	install -m 0600 "$passwords_dir/$daemon_user" "$credential"
	echo "daemon password installed as $credential (LoadCredential=mqtt-password)"
elif [[ -s $passwords_dir/$daemon_user ]] && ! cmp -s "$credential" "$passwords_dir/$daemon_user"; then
	echo "warning: $credential differs from the broker's password for $daemon_user;" \
		"re-run with --rotate $daemon_user to set both" >&2
fi

# --- ACL ------------------------------------------------------------------------
# Lines starting with `##` are template notes; the block between `#@begin daemon`
# and `#@end daemon` repeats per daemon login, then blocks between `#@begin NAME`
# and `#@end NAME` repeat per strategy / operator / trigger. Values never contain a `|`
# (checked above), which the substitutions below use as delimiter.
repeat_daemon_block() {
	local line in_block=0 block=() i user
	while IFS= read -r line || [[ -n $line ]]; do
		if [[ $line == "#@begin daemon" ]]; then
			in_block=1
			block=()
		elif [[ $in_block == 1 && $line == "#@end daemon" ]]; then
			for user in "$daemon_user" "$control_user"; do
				for i in "${block[@]}"; do
					printf '%s\n' "${i//@DAEMON@/"$user"}"
				done
			done
			in_block=0
		elif [[ $in_block == 1 ]]; then
			block+=("$line")
		else
			printf '%s\n' "$line"
		fi
	done
}

render_acl() {
	local line in_block="" block=() i n user
	while IFS= read -r line || [[ -n $line ]]; do
		if [[ $line =~ ^#@begin\ (strategy|operator|trigger)$ ]]; then
			in_block=${BASH_REMATCH[1]}
			block=()
			continue
		fi
		if [[ -n $in_block && $line == "#@end $in_block" ]]; then
			if [[ $in_block == strategy ]]; then
				for sid in "${strategies[@]}"; do
					for i in "${block[@]}"; do
						printf '%s\n' "${i//@SID@/"$sid"}"
					done
				done
			elif [[ $in_block == operator ]]; then
				for user in "${operators[@]}"; do
					for i in "${block[@]}"; do
						printf '%s\n' "${i//@OPERATOR@/"$user"}"
					done
				done
			else
				for ((n = 0; n < ${#trigger_users[@]}; n++)); do
					for i in "${block[@]}"; do
						i=${i//@USER@/"${trigger_users[n]}"}
						printf '%s\n' "${i//@TOPIC@/"${trigger_topics[n]}"}"
					done
				done
			fi
			in_block=""
			continue
		fi
		if [[ $line == "##"* ]]; then
			continue
		elif [[ -n $in_block ]]; then
			block+=("$line")
		else
			printf '%s\n' "$line"
		fi
	done < <(repeat_daemon_block <"$here/acl.template") | sed \
		-e "s|@PREFIX@|$prefix|g" \
		-e "s|@PHONE@|$phone_user|g" \
		-e "s|@HOMEASSISTANT@|$ha_user|g" \
		-e "s|@DISCOVERY@|$discovery|g"
}

acl_new=$(mktemp "$tg_dir/.acl.XXXXXX")
trap 'rm -f "$acl_new"' EXIT
render_acl >"$acl_new"
if [[ -n $extra_acl ]]; then
	printf '\n# --- appended from %s ---\n' "$extra_acl" >>"$acl_new"
	cat "$extra_acl" >>"$acl_new"
fi
if grep -n '@[A-Z]*@' "$acl_new" >&2; then
	die "unrendered placeholder in the ACL (above)"
fi
if cmp -s "$acl_new" "$acl_file"; then
	rm -f "$acl_new"
else
	chgrp "$group" "$acl_new"
	chmod 0640 "$acl_new"
	mv -f "$acl_new" "$acl_file"
	echo "wrote $acl_file (${#strategies[@]} strategies, ${#trigger_users[@]} buttons)"
fi

# --- TLS ------------------------------------------------------------------------
if [[ -n $cert_names ]]; then
	san="DNS:localhost,IP:127.0.0.1"
	IFS=, read -r -a names <<<"$cert_names"
	for name in "${names[@]}"; do
		[[ -n $name ]] || continue
		[[ $name =~ ^[A-Za-z0-9.:-]+$ ]] || die "--make-certs: '$name' is not a host name or IP address"
		if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then
			san+=",IP:$name"
		else
			san+=",DNS:$name"
		fi
	done
	if [[ ! -s $ca_dir/ca.key ]]; then
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
			-keyout "$ca_dir/ca.key" -out "$ca_dir/ca.crt" -days 3650 \
			-subj "/CN=tradeguard MQTT CA" \
			-addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
			-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
		echo "created a private CA in $ca_dir (keep ca.key offline if you can)"
	fi
	install -m 0644 "$ca_dir/ca.crt" "$ca_cert"
	if [[ ! -s $server_key || ! -s $server_cert ]]; then
		openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
			-keyout "$server_key" -out "$ca_dir/server.csr" \
			-subj "/CN=${names[0]:-localhost}" 2>/dev/null
		printf '%s\n' "subjectAltName=$san" "basicConstraints=critical,CA:FALSE" \
			"keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" \
			>"$ca_dir/server.ext"
		openssl x509 -req -in "$ca_dir/server.csr" -CA "$ca_dir/ca.crt" -CAkey "$ca_dir/ca.key" \
			-CAcreateserial -days 825 -sha256 -extfile "$ca_dir/server.ext" \
			-out "$server_cert" 2>/dev/null
		rm -f "$ca_dir/server.csr"
		echo "created $server_cert for $san"
	fi
fi
if [[ -e $server_key ]]; then
	chgrp "$group" "$server_key"
	chmod 0640 "$server_key"
fi
[[ ! -e $server_cert ]] || chmod 0644 "$server_cert"
for file in "$ca_cert" "$server_cert" "$server_key"; do
	if [[ ! -s $file ]]; then
		echo "warning: $file is missing: put your CA and server certificate there" \
			"(or run with --make-certs HOSTNAMES) before starting mosquitto" >&2
	fi
done

# --- apply ----------------------------------------------------------------------
if [[ $restart == 1 && -d /run/systemd/system ]]; then
	if [[ $conf_changed == 1 ]] || ! systemctl is-active --quiet mosquitto; then
		systemctl restart mosquitto
		echo "mosquitto restarted"
	else
		systemctl reload mosquitto
		echo "mosquitto reloaded"
	fi
elif [[ $restart == 1 ]]; then
	echo "no systemd here: restart mosquitto yourself (or send it SIGHUP)"
fi
