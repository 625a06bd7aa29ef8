/* SPDX-License-Identifier: LGPL-2.1-or-later */
typedef int placeholder_translation_unit;
