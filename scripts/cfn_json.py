#!/usr/bin/env python3
"""Prints a CloudFormation/SAM YAML template as JSON, short-form intrinsics in their long form
(`!Ref X` -> {"Ref": "X"}, `!GetAtt A.B` -> {"Fn::GetAtt": ["A", "B"]}, `!Sub s` -> {"Fn::Sub": s}).
The tests read template.yaml through it: the template is the one list of functions and routes.

    cfn_json.py template.yaml
"""
import json
import sys

import yaml


class _Loader(yaml.SafeLoader):
    pass


def _intrinsic(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {"Fn::" + suffix: value}


_Loader.add_multi_constructor("!", _intrinsic)

if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        json.dump(yaml.load(f, Loader=_Loader), sys.stdout)
