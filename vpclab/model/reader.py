"""The generic part of the lab-file reader (pass 1, shape): key paths, field parsers, messages.

A field reads one value at a key path and raises `_Invalid(path, reason)`; a value
parser raises ValueError(reason), which `_leaf` pins to the field's path. Every
service's field table (model/ec2.py, elbv2.py, privatelink.py, route53.py) is made of these.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Callable, Iterable, Mapping, NoReturn

RESOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")
DNS_NAME = re.compile(r"(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*")
PROTOCOL_NAMES = {"6": "tcp", "17": "udp", "1": "icmp"}


# -- Value parsers, shared with live changes: they raise ValueError(reason). --


def parse_network(value: Any) -> IPv4Network:
    """A CIDR block such as 10.0.1.0/24, with no host bits set."""
    if isinstance(value, IPv4Network):
        return value
    text = _text(value)
    try:
        network = IPv4Network(text, strict=False)
    except ValueError:
        network = None
    if network is None or "/" not in text:
        raise ValueError(f"'{text}' is not a CIDR block like 10.0.0.0/16")
    if network.network_address != IPv4Address(text.split("/")[0]):
        raise ValueError(f"{text} has host bits set; the network is {network}")
    return network


def parse_address(value: Any) -> IPv4Address:
    text = _text(value)
    try:
        return IPv4Address(text)
    except ValueError:
        raise ValueError(f"'{text}' is not an IPv4 address like 10.0.1.10") from None


def parse_integer(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)  # CloudFormation writes "80" too
    raise ValueError(f"expected an integer, got {_describe(value)}")


def parse_protocol(value: Any) -> str:
    """"-1" (all), "tcp", "udp", "icmp" or another IP protocol number, as a string."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"expected a protocol (tcp, udp, icmp, -1 or a number), got {_describe(value)}")
    text = str(value).strip().lower()
    if text in ("-1", "all"):
        return "-1"
    if text in ("tcp", "udp", "icmp"):
        return text
    if text.isdigit() and int(text) <= 255:
        return PROTOCOL_NAMES.get(str(int(text)), str(int(text)))
    raise ValueError(f"unknown protocol '{value}'{_did_you_mean(text, ('tcp', 'udp', 'icmp', 'all'))}")


# -- Pass 1: shape. A field reads one value at a key path, raising _Invalid. --


class _Invalid(Exception):
    def __init__(self, path: str, reason: str):
        super().__init__(reason)
        self.path = path
        self.reason = reason


Field = Callable[[Any, str], Any]


def _leaf(parse: Callable[[Any], Any]) -> Field:
    """A field from a value parser: its ValueError becomes an error at the field's path."""

    def read(value: Any, path: str) -> Any:
        try:
            return parse(value)
        except ValueError as e:
            raise _Invalid(path, str(e)) from None

    return read


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f"the string '{value[:40]}'"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    return {dict: "a mapping", list: "a list"}.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (str, int, float)):
        return f"'{value}'"
    return {dict: "a mapping", list: "a list", type(None): "nothing"}.get(type(value), type(value).__name__)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_describe(value)}")
    return value


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"  # CloudFormation writes "true" too
    raise ValueError(f"expected true or false, got {_describe(value)}")


def _between(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        number = parse_integer(value)
        if not low <= number <= high:
            raise ValueError(f"{number} is outside {low}-{high}")
        return number

    return parse


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _text(value).lower()
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got '{value}'{_did_you_mean(text, choices)}")
        return text

    return parse


def _cidr_sized(shortest: int, longest: int) -> Callable[[Any], IPv4Network]:
    def parse(value: Any) -> IPv4Network:
        network = parse_network(value)
        if not shortest <= network.prefixlen <= longest:
            raise ValueError(f"{network} is a /{network.prefixlen}; it must be /{shortest} to /{longest}")
        return network

    return parse


def _account(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # YAML reads an unquoted account as a number
    text = _text(value)
    if not re.fullmatch(r"\d{12}", text):
        raise ValueError(f"an account is 12 digits (quote it if it starts with 0), got '{text}'")
    return text


def _region(value: Any) -> str:
    text = _text(value)
    if not REGION.fullmatch(text):
        raise ValueError(f"'{text}' is not a region name like us-east-1")
    return text


def _dns_name(value: Any) -> str:
    text = _text(value).lower().rstrip(".")
    if not DNS_NAME.fullmatch(text):
        raise ValueError(f"'{value}' is not a DNS name like client.internet.test")
    return text


def _unsupported(what: str) -> Field:
    return _refused(f"{what} are not supported yet")


def _refused(reason: str) -> Field:
    def read(value: Any, path: str) -> NoReturn:
        raise _Invalid(path, reason)

    return read


def _list_of(item: Field) -> Field:
    def read(value: Any, path: str) -> list:
        if value is None:
            return []  # `Routes:` with nothing after it
        if not isinstance(value, list):
            raise _Invalid(path, f"expected a list, got {_describe(value)}")
        return [item(element, f"{path}[{i}]") for i, element in enumerate(value)]

    return read


def _commands(value: Any, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list):
        raise _Invalid(path, f"expected a command or a list of commands, got {_describe(value)}")
    return tuple(_list_of(TEXT)(value, path))


def _fields(value: Any, path: str, schema: Mapping[str, Field], required: Iterable[str] = ()) -> dict[str, Any]:
    """The keys of one mapping, each read by its field; unknown keys refused, required ones enforced."""
    if value is None:
        value = {}  # `client:` with nothing after it
    if not isinstance(value, dict):
        raise _Invalid(path, f"expected a mapping, got {_describe(value)}")
    props = {}
    for key, item in value.items():
        if key not in schema:
            raise _Invalid(_join(path, key), f"unknown key '{key}'{_did_you_mean(str(key), schema)}")
        props[key] = schema[key](item, _join(path, key))
    for key in required:
        if key not in props:
            raise _Invalid(_join(path, key), "required key is missing")
    return props


def _mapping(schema: Mapping[str, Field], required: Iterable[str] = ()) -> Field:
    return lambda value, path: _fields(value, path, schema, required)


TEXT = _leaf(_text)
BOOLEAN = _leaf(_boolean)
INTEGER = _leaf(parse_integer)
ADDRESS = _leaf(parse_address)
NETWORK = _leaf(parse_network)
PROTOCOL = _leaf(parse_protocol)
NAMES = _list_of(TEXT)


def _attributes(value: Any, path: str) -> dict[str, tuple[Any, str]]:
    """AWS attributes as a mapping (`key: value`) or CloudFormation's list of `{Key, Value}`.

    Returns key -> (raw value, key path); values are checked in pass 2, where
    the resource's type says which keys exist.
    """
    if value is None:
        return {}
    found: dict[str, tuple[Any, str]] = {}
    if isinstance(value, list):
        for i, item in enumerate(value):
            props = _fields(item, f"{path}[{i}]", {"Key": TEXT, "Value": _scalar}, required=("Key", "Value"))
            key = props["Key"]
            if key in found:
                raise _Invalid(f"{path}[{i}].Key", f"attribute {key} is given twice")
            found[key] = (props["Value"], f"{path}[{i}].Value")
        return found
    if not isinstance(value, dict):
        raise _Invalid(path, f"expected a mapping of attribute names to values, got {_describe(value)}")
    for key, item in value.items():
        if not isinstance(key, str):
            raise _Invalid(_join(path, key), f"an attribute name is a string, got {_describe(key)}")
        found[key] = (_scalar(item, _join(path, key)), _join(path, key))
    return found


def _scalar(value: Any, path: str) -> Any:
    if isinstance(value, (str, int, bool)):
        return value
    raise _Invalid(path, f"expected a value (text, number or true/false), got {_describe(value)}")


def _a(label: str) -> str:
    return f"an {label}" if label[0] in "aeiou" else f"a {label}"


@dataclass(frozen=True)
class _Spec:
    """One resource as read in pass 1: its typed keys and where it is in the file."""

    section: str
    name: str
    path: str
    props: dict[str, Any]
    order: int  # position in the file, for allocation in file order

    def at(self, key: str) -> str:
        return f"{self.path}.{key}"
